// libpeft from C++: the headers are plain C with extern "C" guards, so a C++
// program includes them as they are and links -lpeft (pkg-config --cflags
// --libs peft). Handles go into std::unique_ptr with the library's destroy
// functions as deleters; errors become exceptions at the call site.
//
//   cpp_example [MODEL]
//
// Without MODEL it builds a tiny random Llama, so it runs anywhere. It
// attaches LoRA and fits a repeating token pattern with peft_trainer_step.
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "peft/peft.h"

namespace {

struct ctx_deleter {
    void operator()(peft_ctx *c) const { peft_ctx_destroy(c); }
};
struct model_deleter {
    void operator()(peft_model *m) const { peft_model_destroy(m); }
};
struct adapter_deleter {
    void operator()(peft_adapter *a) const { peft_adapter_destroy(a); }
};
struct trainer_deleter {
    void operator()(peft_trainer *t) const { peft_trainer_destroy(t); }
};
using ctx_ptr = std::unique_ptr<peft_ctx, ctx_deleter>;
using model_ptr = std::unique_ptr<peft_model, model_deleter>;
using adapter_ptr = std::unique_ptr<peft_adapter, adapter_deleter>;
using trainer_ptr = std::unique_ptr<peft_trainer, trainer_deleter>;

// Throw with the context's message when a call fails.
void check(peft_status st, const peft_ctx *ctx, const char *what)
{
    if (st != PEFT_OK)
        throw std::runtime_error(std::string(what) + ": " + peft_status_str(st) + ": " + peft_ctx_errmsg(ctx));
}

} // namespace

int main(int argc, char **argv)
{
    if (peft_version_number() != PEFT_VERSION_NUMBER) {
        std::fprintf(stderr, "cpp_example: header %s, library %s\n", PEFT_VERSION_STRING, peft_version_string());
        return 1;
    }
    try {
        peft_ctx *raw_ctx = nullptr;
        if (peft_ctx_create(nullptr, &raw_ctx) != PEFT_OK) throw std::runtime_error("cannot create a context");
        ctx_ptr ctx(raw_ctx); // destroyed last: declared first

        peft_model *raw_model = nullptr;
        if (argc > 1) {
            check(peft_model_load(ctx.get(), argv[1], nullptr, &raw_model), ctx.get(), "load");
        } else {
            peft_model_config cfg = peft_model_config_default(PEFT_ARCH_LLAMA);
            cfg.vocab_size = 64, cfg.n_ctx = 32, cfg.d_model = 32, cfg.n_layer = 2;
            cfg.n_head = 4, cfg.n_kv_head = 2, cfg.d_ff = 64;
            check(peft_model_create(ctx.get(), &cfg, &raw_model), ctx.get(), "create");
        }
        model_ptr model(raw_model);
        const peft_model_config *cfg = peft_model_get_config(model.get());

        peft_lora_opts lo = peft_lora_opts_default();
        lo.r = 4;
        peft_adapter *raw_ad = nullptr;
        check(peft_adapter_attach(model.get(), "lora", nullptr, &lo, &raw_ad), ctx.get(), "attach");
        adapter_ptr ad(raw_ad);

        peft_train_opts o = peft_train_opts_default();
        o.lr = 2e-2f;
        peft_trainer *raw_tr = nullptr;
        check(peft_trainer_create(ad.get(), &o, &raw_tr), ctx.get(), "trainer");
        trainer_ptr tr(raw_tr);

        // a batch of B sequences of T tokens, each counting up by 3 from its own start
        const int64_t B = 4, T = 16;
        std::vector<int32_t> ids(static_cast<size_t>(B * T));
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++)
                ids[static_cast<size_t>(b * T + t)] = static_cast<int32_t>((5 * b + 3 * t) % cfg->vocab_size);
        peft_batch batch = {};
        batch.B = B, batch.T = T, batch.ids = ids.data();

        float first = 0, loss = 0;
        for (int step = 0; step < 30; step++) {
            check(peft_trainer_step(tr.get(), &batch, &loss), ctx.get(), "step");
            if (step == 0) first = loss;
        }
        std::printf("%s %s, LoRA r=%d: %lld trainable parameters; training loss %.4f -> %.4f in 30 steps\n",
                    peft_arch_name(cfg->arch), argc > 1 ? argv[1] : "(random)", lo.r,
                    static_cast<long long>(peft_adapter_trainable_numel(ad.get())), first, loss);
        return loss < first ? 0 : 1;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "cpp_example: %s\n", e.what());
        return 1;
    }
}
