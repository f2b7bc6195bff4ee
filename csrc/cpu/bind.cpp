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
  fs::bind_embedding(m);
  fs::bind_masked_mean_pool(m);
  fs::bind_embedding_bag(m);
  fs::bind_dense(m);
  fs::bind_adam(m);
  fs::bind_bce_with_logits(m);
}
