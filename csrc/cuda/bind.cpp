// PYBIND11_MODULE(_cuda): device pointers arrive as integers (CuPy's data.ptr) together
// with CuPy's current stream; nothing here allocates or synchronises.  The launchers and
// their argument conventions are in launchers.h; the Python side is
// src/fastscale/ops/_cuda_util.py and the `_cuda_*` adapters at the end of each op module.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "common.cuh"
#include "launchers.h"

namespace py = pybind11;

// _cuda (nvcc) or _cuda_emu (the same sources on the CPU emulator, FASTSCALE_CUDA_EMU).
#ifndef FASTSCALE_CUDA_MODULE
#define FASTSCALE_CUDA_MODULE _cuda
#endif

PYBIND11_MODULE(FASTSCALE_CUDA_MODULE, m) {
  namespace fc = fastscale::cuda;
  m.doc() = "fastscale CUDA kernels (launchers on CuPy's stream; pointers as integers)";
  m.def("device_count", &fc::device_count);
  m.def("info", []() {
    py::dict d;
    d["archs"] = FASTSCALE_CUDA_ARCHS;
    d["runtime_version"] = fc::runtime_version();
    d["device_count"] = fc::device_count();
    if (fc::device_count() > 0) d["device0"] = fc::device_name(0);
    return d;
  });
  // The encoding of the device error word (common.cuh), for the Python side to decode.
  m.attr("NO_ERROR") = py::int_(fc::NO_ERROR);
  m.attr("ERR_ID") = static_cast<int>(fc::ERR_ID);
  m.attr("ERR_OFFSET") = static_cast<int>(fc::ERR_OFFSET);
  m.attr("ERR_ORDER") = static_cast<int>(fc::ERR_ORDER);
  m.attr("ERR_TARGET") = static_cast<int>(fc::ERR_TARGET);

  // Launches are asynchronous, but a full launch queue can block: release the GIL.
  using nogil = py::call_guard<py::gil_scoped_release>;

  m.def("embedding_forward", &fc::embedding_forward, nogil(), py::arg("weight"), py::arg("ids"), py::arg("out"),
        py::arg("V"), py::arg("D"), py::arg("N"), py::arg("fsize"), py::arg("isize"), py::arg("err"), py::arg("tag"),
        py::arg("stream"));
  m.def("embedding_backward_workspace", &fc::embedding_backward_workspace, py::arg("N"), py::arg("V"),
        py::arg("fsize"), py::arg("sparse"));
  m.def("embedding_backward_dense", &fc::embedding_backward_dense, nogil(), py::arg("dout"), py::arg("ids"),
        py::arg("grad"), py::arg("V"), py::arg("D"), py::arg("N"), py::arg("fsize"), py::arg("isize"),
        py::arg("deterministic"), py::arg("ws"), py::arg("ws_bytes"), py::arg("err"), py::arg("tag"),
        py::arg("stream"));
  m.def("embedding_backward_rows", &fc::embedding_backward_rows, nogil(), py::arg("ids"), py::arg("rows"),
        py::arg("count"), py::arg("V"), py::arg("N"), py::arg("isize"), py::arg("ws"), py::arg("ws_bytes"),
        py::arg("err"), py::arg("tag"), py::arg("stream"));
  m.def("embedding_backward_values", &fc::embedding_backward_values, nogil(), py::arg("dout"), py::arg("values"),
        py::arg("V"), py::arg("D"), py::arg("N"), py::arg("U"), py::arg("fsize"), py::arg("ws"), py::arg("ws_bytes"),
        py::arg("count"), py::arg("err"), py::arg("stream"));

  m.def("embedding_bag_forward", &fc::embedding_bag_forward, nogil(), py::arg("weight"), py::arg("ids"),
        py::arg("offsets"), py::arg("per_sample_weights"), py::arg("padding_idx"), py::arg("mean"), py::arg("out"),
        py::arg("V"), py::arg("D"), py::arg("B"), py::arg("N"), py::arg("Tlen"), py::arg("fsize"), py::arg("isize"),
        py::arg("osize"), py::arg("err"), py::arg("tag"), py::arg("stream"));
  m.def("embedding_bag_backward_workspace", &fc::embedding_bag_backward_workspace, py::arg("N"), py::arg("B"),
        py::arg("V"), py::arg("fsize"), py::arg("sparse"));
  m.def("embedding_bag_backward_dense", &fc::embedding_bag_backward_dense, nogil(), py::arg("dout"), py::arg("ids"),
        py::arg("offsets"), py::arg("per_sample_weights"), py::arg("padding_idx"), py::arg("mean"), py::arg("grad"),
        py::arg("V"), py::arg("D"), py::arg("B"), py::arg("N"), py::arg("Tlen"), py::arg("fsize"), py::arg("isize"),
        py::arg("osize"), py::arg("deterministic"), py::arg("ws"), py::arg("ws_bytes"), py::arg("err"),
        py::arg("tag"), py::arg("stream"));
  m.def("embedding_bag_backward_rows", &fc::embedding_bag_backward_rows, nogil(), py::arg("ids"), py::arg("offsets"),
        py::arg("per_sample_weights"), py::arg("padding_idx"), py::arg("mean"), py::arg("rows"), py::arg("count"),
        py::arg("V"), py::arg("B"), py::arg("N"), py::arg("Tlen"), py::arg("fsize"), py::arg("isize"),
        py::arg("osize"), py::arg("ws"), py::arg("ws_bytes"), py::arg("err"), py::arg("tag"), py::arg("stream"));
  m.def("embedding_bag_backward_values", &fc::embedding_bag_backward_values, nogil(), py::arg("dout"),
        py::arg("values"), py::arg("V"), py::arg("D"), py::arg("B"), py::arg("N"), py::arg("U"), py::arg("fsize"),
        py::arg("ws"), py::arg("ws_bytes"), py::arg("count"), py::arg("err"), py::arg("stream"));

  m.def("masked_mean_pool_forward", &fc::masked_mean_pool_forward, nogil(), py::arg("x"), py::arg("mask"),
        py::arg("out"), py::arg("B"), py::arg("T"), py::arg("D"), py::arg("fsize"), py::arg("stream"));
  m.def("masked_mean_pool_backward", &fc::masked_mean_pool_backward, nogil(), py::arg("dout"), py::arg("mask"),
        py::arg("dx"), py::arg("scale"), py::arg("B"), py::arg("T"), py::arg("D"), py::arg("fsize"),
        py::arg("stream"));

  m.def("dense_forward", &fc::dense_forward, nogil(), py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("act"), py::arg("out"), py::arg("B"), py::arg("I"), py::arg("O"), py::arg("fsize"),
        py::arg("stream"));
  m.def("dense_backward", &fc::dense_backward, nogil(), py::arg("dout"), py::arg("x"), py::arg("weight"),
        py::arg("out"), py::arg("act"), py::arg("dx"), py::arg("dweight"), py::arg("dbias"), py::arg("B"),
        py::arg("I"), py::arg("O"), py::arg("fsize"), py::arg("stream"));

  m.def("bce_workspace_bytes", &fc::bce_workspace_bytes, py::arg("N"));
  m.def("bce_with_logits", &fc::bce_with_logits, nogil(), py::arg("logits"), py::arg("targets"), py::arg("dlogits"),
        py::arg("N"), py::arg("fsize"), py::arg("ws"), py::arg("ws_bytes"), py::arg("result"), py::arg("err"),
        py::arg("tag"), py::arg("stream"));

  m.def("adam_multi", &fc::adam_multi, nogil(), py::arg("params"), py::arg("grads"), py::arg("ms"), py::arg("vs"),
        py::arg("sizes"), py::arg("fsize"), py::arg("beta1"), py::arg("beta2"), py::arg("alpha"), py::arg("eps"),
        py::arg("weight_decay"), py::arg("decay"), py::arg("mode"), py::arg("err"), py::arg("stream"));
  m.def("sparse_adam_step", &fc::sparse_adam_step, nogil(), py::arg("param"), py::arg("rows"), py::arg("values"),
        py::arg("m"), py::arg("v"), py::arg("V"), py::arg("D"), py::arg("R"), py::arg("fsize"), py::arg("isize"),
        py::arg("beta1"), py::arg("beta2"), py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"),
        py::arg("decay"), py::arg("mode"), py::arg("count"), py::arg("err"), py::arg("tag"), py::arg("stream"));

#ifdef FASTSCALE_CUDA_EMU
  // The emulator's controls (tests/test_cuda_emu.py): the order blocks and threads run in
  // (0 forward, 1 reverse, 2 seeded random) and the log of launched kernels.
  namespace emu = fastscale::emu;
  m.def("emu_set_schedule", &emu::set_schedule, py::arg("order"), py::arg("seed") = 0);
  m.def("emu_clear_log", &emu::clear_log);
  m.def("emu_launch_log", &emu::launch_log);
  m.def("emu_selftest", &emu::selftest, py::arg("name"), py::arg("out"));
#endif
}
