// PYBIND11_MODULE(_cuda): device pointers arrive as integers (CuPy's data.ptr) together
// with CuPy's current stream; nothing here allocates or synchronises.
#include <pybind11/pybind11.h>

#include "common.cuh"

namespace py = pybind11;

PYBIND11_MODULE(_cuda, m) {
  namespace fc = fastscale::cuda;
  m.doc() = "fastscale CUDA kernels";
  m.def("device_count", &fc::device_count);
  m.def("info", []() {
    py::dict d;
    d["archs"] = FASTSCALE_CUDA_ARCHS;
    d["runtime_version"] = fc::runtime_version();
    d["device_count"] = fc::device_count();
    if (fc::device_count() > 0) d["device0"] = fc::device_name(0);
    return d;
  });
}
