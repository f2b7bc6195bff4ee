// PLACEHOLDER: replaced by the dense kernels.
#include "common.h"
namespace fastscale {
void bind_dense(py::module_& m) {}
}  // namespace fastscale
