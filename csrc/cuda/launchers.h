// Every CUDA launcher of fastscale._cuda, as plain C++ (bind.cpp binds them; the kernels
// live in <op>.cu).  Conventions shared by all of them:
//
// * Pointers are device addresses as integers (CuPy's `a.data.ptr`); `stream` is CuPy's
//   current stream (`cupy.cuda.get_current_stream().ptr`).  Nothing here allocates, frees
//   or synchronises: launches are asynchronous on `stream`; Python allocates every output,
//   scratch and workspace (its size from the *_workspace functions).
// * Argument order follows the CPU binding of the same op, then sizes, then dtype sizes
//   (fsize: 4 = float32, 8 = float64; isize / osize: 4 = int32, 8 = int64), then the error
//   word (`err`, a u64 in device memory kept at ~0 by Python; see common.cuh) and its `tag`,
//   then the stream.
// * Bad input (ids, offsets, rows, targets) is reported through `err`, never by a crash or
//   an out-of-bounds access; kernels that write caller-owned state skip when `err` is set.
#pragma once

#include <cstdint>
#include <vector>

namespace fastscale {
namespace cuda {

using up = std::uintptr_t;
using i64 = std::int64_t;
using u64 = unsigned long long;

// ------------------------------------------------------------------ sort.cu (CUB)
// Bytes of CUB temp storage to sort n (u32 key, u32 value) pairs on end_bit key bits,
// and for an inclusive u32 scan of n items (max of the two).
i64 segment_temp_bytes(i64 n, int end_bit);
void sort_pairs_u32(void* temp, i64 temp_bytes, const unsigned* keys_in, unsigned* keys_out, const unsigned* vals_in,
                    unsigned* vals_out, i64 n, int end_bit, void* stream, const char* op);
void inclusive_sum_u32(void* temp, i64 temp_bytes, const unsigned* in, unsigned* out, i64 n, void* stream,
                       const char* op);

// ------------------------------------------------------------------ embedding.cu
void embedding_forward(up weight, up ids, up out, i64 V, i64 D, i64 N, int fsize, int isize, up err, u64 tag,
                       up stream);
i64 embedding_backward_workspace(i64 N, i64 V, int fsize, bool sparse);
void embedding_backward_dense(up dout, up ids, up grad, i64 V, i64 D, i64 N, int fsize, int isize,
                              bool deterministic, up ws, i64 ws_bytes, up err, u64 tag, up stream);
void embedding_backward_rows(up ids, up rows, up count, i64 V, i64 N, int isize, up ws, i64 ws_bytes, up err,
                             u64 tag, up stream);
// count == 0: U is the number of unique rows; else U bounds it and *count (device) holds it.
// err may be 0; when set and failed, nothing is written.
void embedding_backward_values(up dout, up values, i64 V, i64 D, i64 N, i64 U, int fsize, up ws, i64 ws_bytes,
                               up count, up err, up stream);

// ------------------------------------------------------------------ embedding_bag.cu
// offsets == 0: padded ids (B, Tlen); else CSR offsets (B+1,) of osize bytes each.
void embedding_bag_forward(up weight, up ids, up offsets, up psw, i64 pad, bool mean, up out, i64 V, i64 D, i64 B,
                           i64 N, i64 Tlen, int fsize, int isize, int osize, up err, u64 tag, up stream);
i64 embedding_bag_backward_workspace(i64 N, i64 B, i64 V, int fsize, bool sparse);
void embedding_bag_backward_dense(up dout, up ids, up offsets, up psw, i64 pad, bool mean, up grad, i64 V, i64 D,
                                  i64 B, i64 N, i64 Tlen, int fsize, int isize, int osize, bool deterministic,
                                  up ws, i64 ws_bytes, up err, u64 tag, up stream);
void embedding_bag_backward_rows(up ids, up offsets, up psw, i64 pad, bool mean, up rows, up count, i64 V, i64 B,
                                 i64 N, i64 Tlen, int fsize, int isize, int osize, up ws, i64 ws_bytes, up err,
                                 u64 tag, up stream);
// count, err: as for embedding_backward_values.
void embedding_bag_backward_values(up dout, up values, i64 V, i64 D, i64 B, i64 N, i64 U, int fsize, up ws,
                                   i64 ws_bytes, up count, up err, up stream);

// ------------------------------------------------------------------ masked_mean_pool.cu
void masked_mean_pool_forward(up x, up mask, up out, i64 B, i64 T, i64 D, int fsize, up stream);
// scale: B elements of the float dtype (scratch).
void masked_mean_pool_backward(up dout, up mask, up dx, up scale, i64 B, i64 T, i64 D, int fsize, up stream);

// ------------------------------------------------------------------ dense.cu
// bias, out (backward), dx may be 0 (absent).  act: 0 none, 1 relu, 2 sigmoid, 3 tanh.
void dense_forward(up x, up weight, up bias, int act, up out, i64 B, i64 I, i64 O, int fsize, up stream);
void dense_backward(up dout, up x, up weight, up out, int act, up dx, up dweight, up dbias, i64 B, i64 I, i64 O,
                    int fsize, up stream);

// ------------------------------------------------------------------ bce_with_logits.cu
i64 bce_workspace_bytes(i64 N);
// result: one double in device memory, the mean loss.
void bce_with_logits(up logits, up targets, up dlogits, i64 N, int fsize, up ws, i64 ws_bytes, up result, up err,
                     u64 tag, up stream);

// ------------------------------------------------------------------ adam.cu
// Multi-tensor fused Adam: one launch (per ~320 chunks of 64K elements) over every
// (param, grad, m, v) quadruple.  err may be 0; when set, no tensor is written.
void adam_multi(const std::vector<up>& params, const std::vector<up>& grads, const std::vector<up>& ms,
                const std::vector<up>& vs, const std::vector<i64>& sizes, int fsize, double beta1, double beta2,
                double alpha, double eps, double wd, double decay, int mode, up err, up stream);
// count == 0: R rows; else R bounds them and *count (device, a sparse backward's row count)
// holds how many of the leading rows to update: a training step then never reads it back.
void sparse_adam_step(up param, up rows, up values, up m, up v, i64 V, i64 D, i64 R, int fsize, int isize,
                      double beta1, double beta2, double alpha, double eps, double wd, double decay, int mode,
                      up count, up err, u64 tag, up stream);

}  // namespace cuda
}  // namespace fastscale
