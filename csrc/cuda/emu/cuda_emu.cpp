// The emulator's runtime: launch checks, the block scheduler and its fibers, warp
// collectives, barriers, the runtime-API and cub stand-ins.  See cuda_emu.h for the model.
#include "cuda_emu.h"

#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define FS_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FS_EMU_ASAN 1
#endif
#endif
#ifdef FS_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__)
#error "the CUDA emulator's fibers are written for x86-64"
#endif

// Bounds of the __shared__ section (defined by the linker when the section exists).
extern "C" char __start_fs_emu_shared[] __attribute__((weak, visibility("hidden")));
extern "C" char __stop_fs_emu_shared[] __attribute__((weak, visibility("hidden")));

// fs_emu_switch(&save_sp, new_sp): save the callee-saved registers, MXCSR and the x87
// control word on the current stack, store its pointer, continue on new_sp.
extern "C" void fs_emu_switch(void** save_sp, void* new_sp) __attribute__((visibility("hidden")));
asm(R"(
  .text
  .globl fs_emu_switch
  .hidden fs_emu_switch
  .type fs_emu_switch,@function
fs_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size fs_emu_switch,.-fs_emu_switch
)");

namespace fastscale {
namespace emu {

uint3 tid_{0, 0, 0}, bid_{0, 0, 0};
dim3 bdim_, gdim_;

namespace {

constexpr size_t STACK = 256 * 1024;
enum State : int { RUN = 0, BAR = 1, WARP = 2, DONE = 3 };
const char* const COLL_NAMES[] = {"__shfl_sync", "__shfl_down_sync", "__shfl_up_sync", "__shfl_xor_sync",
                                  "__ballot_sync", "__any_sync",      "__all_sync",     "__syncwarp"};

struct Fiber {
  void* sp = nullptr;
  char* stack = nullptr;  // STACK bytes, lowest page a guard
  int state = RUN;
  uint3 tid{0, 0, 0};
  const char* file = nullptr;  // where it waits
  int line = 0;
  unsigned long long val = 0, res = 0;
  int arg = 0, width = 32;
};

// One pending collective of a warp: the lanes of `mask` meet in it.  A warp may have
// several at once when their masks are disjoint (e.g. two half-warps shuffling apart).
struct Group {
  int kind = 0;
  unsigned mask = 0, arrived = 0;
  const char* file = nullptr;
  int line = 0;
};

struct Warp {
  Group g[32];
  int n = 0;
  unsigned exited = 0;
  Group* naming(unsigned bits) {  // the pending group whose mask meets bits
    for (int q = 0; q < n; ++q)
      if (g[q].mask & bits) return &g[q];
    return nullptr;
  }
  void remove(Group* p) {
    *p = g[n - 1];
    --n;
  }
};

struct Abort {};  // unwinds the scheduler after a reported bug

std::mutex g_mutex;  // one launch at a time (bindings release the GIL)
thread_local cudaError_t g_last = cudaSuccess;
int g_order = FORWARD;
unsigned long long g_seed = 0;
std::string g_log;

// The running launch.
std::vector<Fiber> g_fibers;
std::vector<Warp> g_warps;
int g_nthreads = 0;
int g_cur = -1;  // running fiber, -1: the scheduler
void* g_sched_sp = nullptr;
void (*g_body)(void*) = nullptr;
void* g_ctx = nullptr;
std::string g_error;
std::mt19937_64 g_rng;
unsigned long long g_rot = 0;
// A fault inside a kernel (an access to unmapped or protected memory, e.g. a guard page the
// tests put after an array) ends the launch with a report instead of the process:
// cudaErrorIllegalAddress on the GPU.
sigjmp_buf g_fault_jmp;
volatile sig_atomic_t g_in_kernel = 0;
struct sigaction g_old_segv, g_old_bus;
char g_fault_msg[256];
#ifdef FS_EMU_ASAN
void* g_sched_fake = nullptr;
const void* g_main_bottom = nullptr;
size_t g_main_size = 0;
#endif

std::string where_thread(int i) {
  std::ostringstream o;
  const Fiber& f = g_fibers[i];
  o << "block (" << bid_.x << "," << bid_.y << "," << bid_.z << ") thread (" << f.tid.x << "," << f.tid.y << ","
    << f.tid.z << ") [warp " << (i >> 5) << " lane " << (i & 31) << "]";
  return o.str();
}

std::string hex(unsigned m) {
  char b[16];
  snprintf(b, sizeof b, "0x%08x", m);
  return b;
}

void switch_to_fiber(int i) {
  g_cur = i;
  tid_ = g_fibers[i].tid;
#ifdef FS_EMU_ASAN
  __sanitizer_start_switch_fiber(&g_sched_fake, g_fibers[i].stack, STACK);
#endif
  fs_emu_switch(&g_sched_sp, g_fibers[i].sp);
#ifdef FS_EMU_ASAN
  __sanitizer_finish_switch_fiber(g_sched_fake, nullptr, nullptr);
#endif
  g_cur = -1;
}

// From a fiber back to the scheduler; returns when the scheduler resumes it.
void yield_fiber(bool exiting = false) {
  Fiber& f = g_fibers[g_cur];
#ifdef FS_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(exiting ? nullptr : &fake, g_main_bottom, g_main_size);
#endif
  fs_emu_switch(&f.sp, g_sched_sp);
#ifdef FS_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  (void)exiting;
}

[[noreturn]] void report(const std::string& what) {
  if (g_error.empty()) g_error = what;
  if (g_cur >= 0) {
    g_fibers[g_cur].state = DONE;
    yield_fiber(true);  // never resumed
    std::abort();
  }
  throw Abort{};
}

void exit_thread();

void fiber_entry() {
#ifdef FS_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &g_main_bottom, &g_main_size);
#endif
  g_body(g_ctx);
  exit_thread();
}

void exit_thread() {
  const int i = g_cur;
  Warp& w = g_warps[i >> 5];
  const unsigned bit = 1u << (i & 31);
  w.exited |= bit;
  if (const Group* p = w.naming(bit))
    report(where_thread(i) + " exited while lanes " + hex(p->arrived) + " of its warp wait for it in " +
           COLL_NAMES[p->kind] + "(mask " + hex(p->mask) + ") at " + p->file + ":" + std::to_string(p->line) +
           " (a hang or undefined result on the GPU)");
  g_fibers[i].state = DONE;
  yield_fiber(true);
  std::abort();  // a finished fiber is never resumed
}

void init_fiber(int i) {
  Fiber& f = g_fibers[i];
  if (f.stack == nullptr) {
    void* p = mmap(nullptr, STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("cuda emulator: cannot map a fiber stack");
    mprotect(p, static_cast<size_t>(sysconf(_SC_PAGESIZE)), PROT_NONE);  // overflow guard
    f.stack = static_cast<char*>(p);
  }
  // The frame fs_emu_switch pops: MXCSR / x87 CW, r15..rbp, then fiber_entry as the return
  // address, above it a null fake return address (16-byte alignment as after a call).
#ifdef FS_EMU_ASAN
  // Frames of threads that never returned (a finished thread switches away from inside its
  // kernel's frames) leave redzones poisoned: the stack is fresh for the next thread.
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  ASAN_UNPOISON_MEMORY_REGION(f.stack + page, STACK - page);
#endif
  auto* top = reinterpret_cast<std::uint64_t*>(f.stack + STACK);
  top[-1] = 0;
  top[-2] = reinterpret_cast<std::uint64_t>(&fiber_entry);
  for (int r = 3; r <= 8; ++r) top[-r] = 0;
  top[-9] = 0x1F80ull | (0x037Full << 32);
  f.sp = &top[-9];
  f.state = RUN;
  f.file = nullptr;
  f.line = 0;
}

void run_block(unsigned bx, unsigned by, unsigned bz, std::vector<int>& order) {
  bid_ = uint3{bx, by, bz};
  const int n = g_nthreads;
  for (int i = 0; i < n; ++i) init_fiber(i);
  for (auto& w : g_warps) w = Warp{};
  if (__start_fs_emu_shared != nullptr &&
      reinterpret_cast<std::uintptr_t>(__stop_fs_emu_shared) > reinterpret_cast<std::uintptr_t>(__start_fs_emu_shared))
    memset(__start_fs_emu_shared, 0xff, static_cast<size_t>(__stop_fs_emu_shared - __start_fs_emu_shared));
  int live = n;
  for (;;) {
    if (g_order == RANDOM) std::shuffle(order.begin(), order.end(), g_rng);
    bool ran = false;
    for (int i : order) {
      if (g_fibers[i].state != RUN) continue;
      ran = true;
      switch_to_fiber(i);
      if (!g_error.empty()) throw Abort{};
    }
    if (ran) continue;
    live = 0;
    int bar = 0, first_bar = -1, first_warp = -1, first_done = -1;
    for (int i = 0; i < n; ++i) {
      const int s = g_fibers[i].state;
      if (s == DONE) {
        if (first_done < 0) first_done = i;
        continue;
      }
      ++live;
      if (s == BAR) {
        ++bar;
        if (first_bar < 0) first_bar = i;
      } else if (s == WARP && first_warp < 0) {
        first_warp = i;
      }
    }
    if (live == 0) return;
    if (bar == live) {
      const Fiber& a = g_fibers[first_bar];
      if (first_done >= 0)
        report("__syncthreads at " + std::string(a.file) + ":" + std::to_string(a.line) + " reached by " +
               std::to_string(bar) + " threads while " + std::to_string(n - live) + " threads of the block (first: " +
               where_thread(first_done) + ") have exited: undefined behaviour (a hang) on the GPU");
      for (int i = 0; i < n; ++i) {
        Fiber& f = g_fibers[i];
        if (f.state != BAR) continue;
        if (f.line != a.line || strcmp(f.file, a.file) != 0)
          report("divergent __syncthreads: " + where_thread(first_bar) + " waits at " + a.file + ":" +
                 std::to_string(a.line) + ", " + where_thread(i) + " at " + f.file + ":" + std::to_string(f.line));
        f.state = RUN;
      }
      continue;
    }
    // Nobody can run and not everybody is at the barrier: a deadlock on the GPU.
    std::string msg = "deadlock: ";
    if (first_warp >= 0) {
      const Group* p = g_warps[first_warp >> 5].naming(1u << (first_warp & 31));
      msg += where_thread(first_warp) + " waits in " + COLL_NAMES[p->kind] + "(mask " + hex(p->mask) + ") at " +
             p->file + ":" + std::to_string(p->line) + " (arrived " + hex(p->arrived) + ")";
    }
    if (first_bar >= 0)
      msg += std::string(first_warp >= 0 ? "; " : "") + where_thread(first_bar) + " waits at __syncthreads at " +
             g_fibers[first_bar].file + ":" + std::to_string(g_fibers[first_bar].line);
    report(msg);
  }
}

void on_fault(int sig, siginfo_t* info, void*) {
  if (!g_in_kernel) {  // not ours: restore the previous handler and let the access fault again
    sigaction(SIGSEGV, &g_old_segv, nullptr);
    sigaction(SIGBUS, &g_old_bus, nullptr);
    return;
  }
  g_in_kernel = 0;
  const int i = g_cur;
  snprintf(g_fault_msg, sizeof g_fault_msg,
           "illegal memory access (%s) at address %p by block (%u,%u,%u) thread %d [warp %d lane %d] "
           "(cudaErrorIllegalAddress on the GPU)",
           sig == SIGSEGV ? "SIGSEGV" : "SIGBUS", info->si_addr, bid_.x, bid_.y, bid_.z, i, i >> 5, i & 31);
  siglongjmp(g_fault_jmp, 1);
}

// At every launch (one query): a handler that met a fault outside a kernel gave the signal
// back to the previous handler, and other libraries may install theirs meanwhile.
void install_fault_handler() {
  // Faults on a fiber stack (a stack overflow hits its guard page) need a stack of their own
  // (per OS thread: launches may come from several Python threads).
  stack_t cur;
  if (sigaltstack(nullptr, &cur) == 0 && (cur.ss_flags & SS_DISABLE)) {
    thread_local char alt[64 * 1024];
    stack_t ss{};
    ss.ss_sp = alt;
    ss.ss_size = sizeof alt;
    sigaltstack(&ss, nullptr);
  }
  struct sigaction now {};
  if (sigaction(SIGSEGV, nullptr, &now) == 0 && (now.sa_flags & SA_SIGINFO) && now.sa_sigaction == on_fault) return;
  struct sigaction sa{};
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &g_old_segv);
  sigaction(SIGBUS, &sa, &g_old_bus);
}

bool valid_config(dim3 g, dim3 b, size_t smem) {
  if (b.x < 1 || b.y < 1 || b.z < 1 || b.x > 1024 || b.y > 1024 || b.z > 64) return false;
  if (static_cast<unsigned long long>(b.x) * b.y * b.z > 1024) return false;
  if (g.x < 1 || g.y < 1 || g.z < 1 || g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535) return false;
  if (smem > 48 * 1024) return false;
  return true;
}

}  // namespace

void set_schedule(int order, unsigned long long seed) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (order < FORWARD || order > RANDOM) throw std::invalid_argument("cuda emulator: schedule must be 0, 1 or 2");
  g_order = order;
  g_seed = seed;
}

void clear_log() {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_log.clear();
}

std::string launch_log() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_log;
}

[[noreturn]] void fail(const std::string& what, const char* file, int line) {
  report(what + " at " + file + ":" + std::to_string(line));
}

void syncthreads(const char* file, int line) {
  if (g_cur < 0) throw std::logic_error("cuda emulator: __syncthreads outside a kernel");
  Fiber& f = g_fibers[g_cur];
  f.state = BAR;
  f.file = file;
  f.line = line;
  yield_fiber();
}

unsigned long long warp_collective(int kind, unsigned mask, unsigned long long value, int arg, int width,
                                   const char* file, int line) {
  if (g_cur < 0) throw std::logic_error("cuda emulator: a warp intrinsic outside a kernel");
  const int i = g_cur, lane = i & 31, wi = i >> 5;
  const int wsize = std::min(32, g_nthreads - wi * 32);
  const unsigned exist = wsize == 32 ? ~0u : ((1u << wsize) - 1);
  const std::string at = std::string(" at ") + file + ":" + std::to_string(line);
  const char* name = COLL_NAMES[kind];
  Fiber& f = g_fibers[i];
  Warp& w = g_warps[wi];
  if (!((mask >> lane) & 1u))
    report(where_thread(i) + " calls " + name + " with mask " + hex(mask) + ", which does not name it" + at);
  if (mask & ~exist)
    report(where_thread(i) + " calls " + name + " with mask " + hex(mask) + " naming lanes that do not exist (" +
           std::to_string(wsize) + " threads in this warp)" + at);
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    report(std::string(name) + " with width " + std::to_string(width) + " (must be a power of 2 <= 32)" + at);
  // The pending collective naming this lane (its mask must be this call's), else a new one,
  // whose mask must not meet any pending one's.
  Group* grp = w.naming(1u << lane);
  if (grp == nullptr) grp = w.naming(mask);
  if (grp == nullptr) {
    grp = &w.g[w.n++];
    *grp = Group{kind, mask, 0, file, line};
  } else if (grp->kind != kind || grp->mask != mask) {
    report(where_thread(i) + " calls " + name + "(mask " + hex(mask) + ")" + at + " while lanes " +
           hex(grp->arrived) + " of its warp wait in " + COLL_NAMES[grp->kind] + "(mask " + hex(grp->mask) +
           ") at " + grp->file + ":" + std::to_string(grp->line));
  }
  if (mask & w.exited)
    report(where_thread(i) + " calls " + name + "(mask " + hex(mask) + ")" + at + " but lanes " +
           hex(mask & w.exited) + " it names have exited (a hang or undefined result on the GPU)");
  f.val = value;
  f.arg = arg;
  f.width = width;
  grp->arrived |= 1u << lane;
  if (grp->arrived != mask) {
    f.state = WARP;
    f.file = file;
    f.line = line;
    yield_fiber();
    return f.res;
  }
  // The last lane arrived: compute every lane's result, release the others.
  const int base = wi * 32;
  unsigned long long ballot = 0;
  for (int l = 0; l < 32; ++l)
    if ((mask >> l) & 1u) ballot |= (g_fibers[base + l].val != 0 ? 1ull : 0ull) << l;
  for (int l = 0; l < 32; ++l) {
    if (!((mask >> l) & 1u)) continue;
    Fiber& g = g_fibers[base + l];
    const int wd = g.width, seg = l & ~(wd - 1), in = l & (wd - 1);
    int src = l;
    switch (kind) {
      case SHFL: src = seg + (g.arg & (wd - 1)); break;
      case SHFL_DOWN: src = in + g.arg < wd ? l + g.arg : l; break;
      case SHFL_UP: src = in - g.arg >= 0 ? l - g.arg : l; break;
      case SHFL_XOR: src = seg + ((in ^ g.arg) & (wd - 1)); break;
      default: break;
    }
    if (kind <= SHFL_XOR) {
      if (!((mask >> src) & 1u))
        report(std::string(where_thread(base + l)) + " reads lane " + std::to_string(src) + " in " + name +
               "(mask " + hex(mask) + ")" + at + ", a lane outside the mask (undefined value on the GPU)");
      g.res = g_fibers[base + src].val;
    } else if (kind == BALLOT) {
      g.res = ballot;
    } else if (kind == ANY) {
      g.res = ballot != 0;
    } else if (kind == ALL) {
      g.res = ballot == mask;
    } else {
      g.res = 0;
    }
    if (l != lane) g.state = RUN;
  }
  w.remove(grp);
  return f.res;
}

void run_launch(const char* name, const char* file, int line, dim3 grid, dim3 block, size_t smem,
                void (*body)(void*), void* ctx) {
  std::lock_guard<std::mutex> lock(g_mutex);
  // "... [with auto K = fastscale::cuda::{anonymous}::forward_kernel<...>]" -> the kernel
  std::string k = name;
  {
    const size_t at = k.find("K = ");
    if (at != std::string::npos) k = k.substr(at + 4, k.size() - at - 5);
    for (const char* ns : {"fastscale::cuda::", "{anonymous}::"})
      for (size_t p; (p = k.find(ns)) != std::string::npos;) k.erase(p, strlen(ns));
  }
  {
    std::ostringstream o;
    o << k << " grid=(" << grid.x << "," << grid.y << "," << grid.z << ") block=(" << block.x << "," << block.y
      << "," << block.z << ")\n";
    if (g_log.size() > (1u << 20)) g_log.erase(0, g_log.size() / 2);  // bounded: the recent launches
    g_log += o.str();
  }
  if (!valid_config(grid, block, smem)) {
    g_last = cudaErrorInvalidConfiguration;  // as the driver: reported by cudaGetLastError
    return;
  }
  g_nthreads = static_cast<int>(block.x * block.y * block.z);
  if (static_cast<int>(g_fibers.size()) < g_nthreads) g_fibers.resize(g_nthreads);
  g_warps.assign((g_nthreads + 31) / 32, Warp{});
  for (int i = 0; i < g_nthreads; ++i)
    g_fibers[i].tid = uint3{i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
  bdim_ = block;
  gdim_ = grid;
  g_body = body;
  g_ctx = ctx;
  g_error.clear();
  g_rng.seed(g_seed);
  std::vector<int> order(g_nthreads);
  for (int i = 0; i < g_nthreads; ++i) order[i] = g_order == REVERSE ? g_nthreads - 1 - i : i;
  const unsigned long long nb = static_cast<unsigned long long>(grid.x) * grid.y * grid.z;
  // Block order: forward, reverse, or a seeded permutation (for small grids; large ones
  // use a random rotation, enough to move every block's position).  Decided before sigsetjmp:
  // nothing a fault jumps over is modified after it.
  std::vector<unsigned long long> perm;
  if (g_order == RANDOM && nb <= (1u << 20)) {
    perm.resize(nb);
    for (unsigned long long b = 0; b < nb; ++b) perm[b] = b;
    std::shuffle(perm.begin(), perm.end(), g_rng);
  }
  g_rot = g_order == RANDOM && perm.empty() ? g_rng() % nb : 0;  // a global: no local lives across sigsetjmp
  install_fault_handler();
  if (sigsetjmp(g_fault_jmp, 1) != 0) {  // a kernel thread faulted (on_fault)
    g_cur = -1;
    throw std::runtime_error("cuda emulator: kernel " + k + " launched at " + file + ":" + std::to_string(line) +
                             ": " + g_fault_msg);
  }
  g_in_kernel = 1;
  try {
    for (unsigned long long k = 0; k < nb; ++k) {
      unsigned long long b = k;
      if (g_order == REVERSE) b = nb - 1 - k;
      else if (g_order == RANDOM) b = perm.empty() ? (k + g_rot) % nb : perm[k];
      run_block(static_cast<unsigned>(b % grid.x), static_cast<unsigned>((b / grid.x) % grid.y),
                static_cast<unsigned>(b / (static_cast<unsigned long long>(grid.x) * grid.y)), order);
    }
  } catch (const Abort&) {
  }
  g_in_kernel = 0;
  g_cur = -1;
  if (!g_error.empty()) {
    std::string e = "cuda emulator: kernel " + k + " launched at " + file + ":" +
                    std::to_string(line) + ": " + g_error;
    g_error.clear();
    throw std::runtime_error(e);
  }
}

}  // namespace emu
}  // namespace fastscale

// ---------------------------------------------------------------- runtime API
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}
cudaError_t cudaGetLastError() {
  const cudaError_t e = fastscale::emu::g_last;
  fastscale::emu::g_last = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return fastscale::emu::g_last; }
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) {
  if (bytes > 0 && p == nullptr) return cudaErrorInvalidValue;
  if (bytes > 0) memset(p, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return cudaErrorInvalidValue;
  snprintf(prop->name, sizeof prop->name, "fastscale CPU emulator");
  prop->major = 0;
  prop->minor = 0;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 0;
  return cudaSuccess;
}

// ---------------------------------------------------------------- cub
namespace cub {

// Temp storage: the alternate key / value buffers of the LSD passes (CUB's double buffer).
static size_t sort_bytes(int n) { return static_cast<size_t>(n > 0 ? n : 1) * 8 + 256; }

cudaError_t DeviceRadixSort::SortPairs(void* d_temp, size_t& temp_bytes, const unsigned* keys_in, unsigned* keys_out,
                                       const unsigned* vals_in, unsigned* vals_out, int n, int begin_bit,
                                       int end_bit, cudaStream_t, bool) {
  if (d_temp == nullptr) {
    temp_bytes = sort_bytes(n);
    return cudaSuccess;
  }
  if (temp_bytes < sort_bytes(n) || n < 0 || begin_bit < 0 || end_bit > 32 || begin_bit > end_bit)
    return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  unsigned* tk = static_cast<unsigned*>(d_temp);
  unsigned* tv = tk + n;
  std::copy(keys_in, keys_in + n, keys_out);
  std::copy(vals_in, vals_in + n, vals_out);
  unsigned *sk = keys_out, *sv = vals_out, *dk = tk, *dv = tv;
  for (int b = begin_bit; b < end_bit; b += 8) {
    const int nb = std::min(8, end_bit - b);
    const unsigned m = (1u << nb) - 1;
    size_t cnt[257] = {0};
    for (int i = 0; i < n; ++i) ++cnt[((sk[i] >> b) & m) + 1];
    for (int d = 0; d < 256; ++d) cnt[d + 1] += cnt[d];
    for (int i = 0; i < n; ++i) {  // stable: equal digits keep their order
      const size_t at = cnt[(sk[i] >> b) & m]++;
      dk[at] = sk[i];
      dv[at] = sv[i];
    }
    std::swap(sk, dk);
    std::swap(sv, dv);
  }
  if (sk != keys_out) {
    std::copy(sk, sk + n, keys_out);
    std::copy(sv, sv + n, vals_out);
  }
  return cudaSuccess;
}

cudaError_t DeviceScan::InclusiveSum(void* d_temp, size_t& temp_bytes, const unsigned* in, unsigned* out, int n,
                                     cudaStream_t, bool) {
  if (d_temp == nullptr) {
    temp_bytes = 16;
    return cudaSuccess;
  }
  if (temp_bytes < 16 || n < 0) return cudaErrorInvalidValue;
  unsigned s = 0;
  for (int i = 0; i < n; ++i) out[i] = s += in[i];
  return cudaSuccess;
}

}  // namespace cub
