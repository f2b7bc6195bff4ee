// PLACEHOLDER: replaced by the embedding kernels.
#include "common.h"
namespace fastscale {
void bind_embedding(py::module_& m) {}
}  // namespace fastscale
