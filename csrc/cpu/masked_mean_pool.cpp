// PLACEHOLDER: replaced by the masked_mean_pool kernels.
#include "common.h"
namespace fastscale {
void bind_masked_mean_pool(py::module_& m) {}
}  // namespace fastscale
