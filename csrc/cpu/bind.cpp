// PYBIND11_MODULE(_cpu): build information and thread control here; each op's kernels
// are bound by bind_<op>() in csrc/cpu/<op>.cpp.  Bindings take numpy arrays that the
// Python adapter allocated, check dtype / contiguity / shape in O(1), release the GIL and
// call the raw-pointer kernels.  Nothing is copied and nothing is allocated here.
#include <omp.h>

#include "common.h"

namespace fastscale {
void bind_embedding(py::module_& m);
void bind_masked_mean_pool(py::module_& m);
void bind_embedding_bag(py::module_& m);
void bind_dense(py::module_& m);
void bind_adam(py::module_& m);
void bind_bce_with_logits(py::module_& m);
void bind_tokenizer(py::module_& m);
void stream_copy(const float* src, float* dst, i64 n);
void stream_rmw(float* a, const float* b, float s, i64 n);
}  // namespace fastscale

PYBIND11_MODULE(_cpu, m) {
  namespace fs = fastscale;
  namespace py = pybind11;
  m.doc() = "fastscale CPU kernels (C++, OpenMP, run-time AVX2/AVX-512 dispatch)";
  m.def("info", []() {
    py::dict d;
    d["compiler"] = FASTSCALE_COMPILER;
    d["isa"] = fs::isa_name(fs::active_isa());
    d["isa_detected"] = fs::isa_name(fs::detected_isa());
    d["openmp"] = _OPENMP;
    d["num_threads"] = fs::get_num_threads();
    d["num_procs"] = omp_get_num_procs();
    return d;
  });
  m.def("get_num_threads", &fs::get_num_threads);
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("set_num_threads: n must be >= 1, got " + std::to_string(n));
    fs::set_num_threads(n);
  });
  m.def("stream_copy", [](py::array src, py::array dst) {
    if (src.size() != dst.size()) throw py::value_error("stream_copy: src and dst must have the same size");
    const float* s = fs::cptr<float>(src, fs::Dt::f32, "stream_copy", "src");
    float* d = fs::mptr<float>(dst, fs::Dt::f32, "stream_copy", "dst");
    py::gil_scoped_release nogil;
    fs::stream_copy(s, d, static_cast<fs::i64>(src.size()));
  });
  m.def("stream_rmw", [](py::array a, py::array b) {
    if (a.size() != b.size()) throw py::value_error("stream_rmw: a and b must have the same size");
    float* pa = fs::mptr<float>(a, fs::Dt::f32, "stream_rmw", "a");
    const float* pb = fs::cptr<float>(b, fs::Dt::f32, "stream_rmw", "b");
    py::gil_scoped_release nogil;
    fs::stream_rmw(pa, pb, 0.5f, static_cast<fs::i64>(a.size()));
  });
  fs::bind_embedding(m);
  fs::bind_masked_mean_pool(m);
  fs::bind_embedding_bag(m);
  fs::bind_dense(m);
  fs::bind_adam(m);
  fs::bind_bce_with_logits(m);
  fs::bind_tokenizer(m);
}
