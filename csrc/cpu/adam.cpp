// PLACEHOLDER: replaced by the adam kernels.
#include "common.h"
namespace fastscale {
void bind_adam(py::module_& m) {}
}  // namespace fastscale
