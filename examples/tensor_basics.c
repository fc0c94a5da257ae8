/* The tensor/autograd API in a few lines: fit y = W x with gradient descent.
 * Build against an installed libpeft with:
 *   cc tensor_basics.c $(pkg-config --cflags --libs peft) */
#include <stdio.h>

#include "peft/peft.h"

#define CHECK(call)                                                                  \
    do {                                                                             \
        peft_status st_ = (call);                                                    \
        if (st_ != PEFT_OK) {                                                        \
            fprintf(stderr, "%s: %s\n", #call, peft_ctx_errmsg(ctx));                \
            return 1;                                                                \
        }                                                                            \
    } while (0)

int main(void)
{
    if (peft_version_number() != PEFT_VERSION_NUMBER) {
        fprintf(stderr, "header and library versions differ\n");
        return 1;
    }
    peft_ctx *ctx = NULL;
    if (peft_ctx_create(NULL, &ctx) != PEFT_OK) return 1;

    const int64_t sx[2] = {8, 4}, sw[2] = {3, 4};
    peft_tensor *x, *target_w, *w, *y, *t, *d, *sq, *loss;
    CHECK(peft_tensor_create(ctx, PEFT_DTYPE_F32, 2, sx, &x));          /* inputs [8, 4] */
    CHECK(peft_tensor_create(ctx, PEFT_DTYPE_F32, 2, sw, &target_w));   /* the answer [3, 4] */
    CHECK(peft_tensor_create(ctx, PEFT_DTYPE_F32, 2, sw, &w));          /* what we learn */
    CHECK(peft_tensor_init_normal(x, 0.0f, 1.0f));
    CHECK(peft_tensor_init_normal(target_w, 0.0f, 1.0f));
    CHECK(peft_tensor_init_kaiming_uniform(w, 2.2360680f, 0));
    CHECK(peft_tensor_set_requires_grad(w, 1));

    float lv = 0.0f;
    for (int step = 0; step < 200; step++) {
        CHECK(peft_linear(ctx, x, w, NULL, &y));          /* y = x W^T, recorded */
        CHECK(peft_linear(ctx, x, target_w, NULL, &t));   /* frozen: no gradient */
        CHECK(peft_sub(ctx, y, t, &d));
        CHECK(peft_mul(ctx, d, d, &sq));
        CHECK(peft_mean(ctx, sq, &loss));
        CHECK(peft_backward(ctx, loss, &lv));             /* grads into w, graph released */
        float *wd = peft_tensor_data(w), *g = peft_tensor_grad(w);
        for (int i = 0; i < 12; i++) wd[i] -= 0.1f * g[i]; /* plain SGD */
        peft_tensor_zero_grad(w);
        if (step % 50 == 0 || step == 199) printf("step %3d  loss %.6f\n", step, lv);
    }
    peft_tensor_destroy(x), peft_tensor_destroy(target_w), peft_tensor_destroy(w);
    peft_ctx_destroy(ctx);
    return lv < 1e-3f ? 0 : 1;
}
