/* libpeft — autograd.
 *
 * While gradients are enabled (the default), every op whose inputs include a
 * tensor that requires a gradient records a node on the context's tape.
 * peft_backward(loss) walks the tape backwards from a scalar, accumulating
 * (+=) into the gradients of every leaf that requires one, then releases the
 * tape and the scratch arena: every op output since the last release becomes
 * invalid. Frozen tensors (requires_grad 0) never get a weight-gradient
 * computation; their ops only propagate to inputs that need it.
 */
#ifndef PEFT_AUTOGRAD_H
#define PEFT_AUTOGRAD_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Enable or disable recording; returns the previous setting, so a no-grad
 * scope reads: int prev = peft_set_grad_enabled(ctx, 0); ...;
 * peft_set_grad_enabled(ctx, prev); */
PEFT_API int peft_set_grad_enabled(peft_ctx *ctx, int enabled);
PEFT_API int peft_grad_enabled(const peft_ctx *ctx);

/* Back-propagate from `loss` (a 1-element f32 tensor produced by an op on this
 * context's tape). Gradients accumulate into leaves. On success and on failure
 * the graph and the scratch arena are released. If loss_value is not NULL it
 * receives the loss before the release. */
PEFT_API peft_status peft_backward(peft_ctx *ctx, peft_tensor *loss, float *loss_value);

/* Drop the tape and rewind the scratch arena without a backward pass (after
 * evaluation). All op outputs become invalid. */
PEFT_API void peft_graph_release(peft_ctx *ctx);

/* Number of nodes on the tape right now. */
PEFT_API size_t peft_graph_size(const peft_ctx *ctx);

#ifdef __cplusplus
}
#endif
#endif /* PEFT_AUTOGRAD_H */
