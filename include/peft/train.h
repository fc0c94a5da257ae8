/* libpeft — datasets, the trainer, evaluation, early stopping, checkpoints.
 *
 * Intended use:
 *
 *   peft_adapter *ad;  peft_adapter_attach(model, "lora", &task, &lora_opts, &ad);
 *   peft_dataset *all, *train, *val;
 *   peft_dataset_load_text(ctx, tok, "corpus.txt", 128, &all);
 *   peft_dataset_split(all, 0.1, seed, &train, &val);
 *   peft_train_opts o = peft_train_opts_default();  o.lr = 1e-3; o.epochs = 3;
 *   peft_trainer *tr;  peft_trainer_create(ad, &o, &tr);
 *   peft_fit_result r; peft_trainer_fit(tr, train, val, &r);
 *   peft_adapter_save(ad, "adapter.safetensors");
 *
 * Every run is reproducible from its seed; a run resumed from a checkpoint
 * continues bit for bit like an uninterrupted one.
 */
#ifndef PEFT_TRAIN_H
#define PEFT_TRAIN_H

#include "optim.h"
#include "strategy.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- datasets ---- */

typedef struct peft_dataset peft_dataset;

/* Causal-LM examples from text: the text is tokenized (documents separated by
 * blank lines each start with BOS when the tokenizer has one) and packed into
 * sequences of seq_len tokens. */
PEFT_API peft_status peft_dataset_from_text(peft_ctx *ctx, peft_tokenizer *tok, const char *text, size_t len,
                                            int64_t seq_len, peft_dataset **out);
PEFT_API peft_status peft_dataset_load_text(peft_ctx *ctx, peft_tokenizer *tok, const char *path, int64_t seq_len,
                                            peft_dataset **out);
/* Classification examples from a TSV file of "label<TAB>text" lines; labels
 * become class ids in sorted order; texts longer than max_len tokens are
 * truncated (keeping the start). */
PEFT_API peft_status peft_dataset_load_tsv(peft_ctx *ctx, peft_tokenizer *tok, const char *path, int64_t max_len,
                                           peft_dataset **out);
/* Build from memory: n examples of token ids (lens[i] tokens each) with labels
 * (NULL for LM) — the arrays are copied. */
PEFT_API peft_status peft_dataset_from_ids(peft_ctx *ctx, size_t n, const int32_t *const *ids, const int64_t *lens,
                                           const int32_t *labels, int n_classes, peft_dataset **out);
PEFT_API void peft_dataset_destroy(peft_dataset *ds);

PEFT_API size_t peft_dataset_size(const peft_dataset *ds);
PEFT_API int peft_dataset_n_classes(const peft_dataset *ds); /* 0 for LM data */
PEFT_API const char *peft_dataset_class_name(const peft_dataset *ds, int label);
PEFT_API int64_t peft_dataset_max_len(const peft_dataset *ds);
/* Total tokens over all examples. */
PEFT_API int64_t peft_dataset_n_tokens(const peft_dataset *ds);

/* A deterministic split by seed: a shuffled fraction val_frac goes to *val
 * (at least 1 example each when possible). The parts share the parent's
 * storage and must be destroyed before it. */
PEFT_API peft_status peft_dataset_split(const peft_dataset *ds, double val_frac, uint64_t seed, peft_dataset **train,
                                        peft_dataset **val);

/* ---- the trainer ---- */

typedef struct peft_progress {
    int64_t step;        /* optimizer steps done */
    int64_t total_steps;
    int epoch;
    float loss;          /* training loss of the last step (mean over its micro-batches) */
    float lr;            /* learning rate used by the last step */
    double tokens_per_s; /* over the last step */
    double elapsed_s;
    /* set on evaluation reports, else NaN */
    double val_loss, val_ppl, val_acc;
} peft_progress;

/* Return nonzero to stop training (the fit ends with PEFT_ABORTED). */
typedef int (*peft_progress_fn)(const peft_progress *p, void *user);

typedef struct peft_train_opts {
    size_t struct_size;
    peft_opt_kind optimizer; /* default AdamW */
    float lr;                /* default 1e-3 */
    float weight_decay;      /* default 0 */
    float beta1, beta2, eps; /* AdamW */
    float momentum;          /* SGD */
    int nesterov;            /* SGD */
    peft_schedule schedule;  /* default constant */
    float max_grad_norm;     /* clip by global norm; 0 = off (default 1) */
    int batch_size;          /* examples per micro-batch (default 8) */
    int grad_accum;          /* micro-batches per optimizer step (default 1) */
    int epochs;              /* default 1 */
    int64_t max_steps;       /* > 0: stop after this many optimizer steps */
    int64_t eval_every;      /* evaluate every N steps; 0 = at the end of each epoch */
    int patience;            /* early stopping: evaluations without improvement (0 = off) */
    float min_delta;         /* an improvement must beat the best by more than this */
    int restore_best;        /* early stopping restores the best weights (default 1) */
    int shuffle;             /* reshuffle the training set every epoch (default 1) */
    uint64_t seed;           /* data order (and nothing else: dropout uses the context PRNG) */
    peft_progress_fn progress;
    void *progress_user;
    int64_t log_every;       /* progress reports every N steps (default 1) */
} peft_train_opts;

PEFT_API peft_train_opts peft_train_opts_default(void);

typedef struct peft_trainer peft_trainer;

PEFT_API peft_status peft_trainer_create(peft_adapter *ad, const peft_train_opts *opts, peft_trainer **out);
PEFT_API void peft_trainer_destroy(peft_trainer *tr);

/* One micro-batch: forward, backward, and every grad_accum micro-batches the
 * clipped optimizer step. A non-finite loss or gradient refuses the step
 * (PEFT_ERR_NUMERIC) and leaves the weights untouched. */
PEFT_API peft_status peft_trainer_step(peft_trainer *tr, const peft_batch *batch, float *loss);

typedef struct peft_metrics {
    double loss; /* mean per prediction */
    double ppl;  /* exp(loss) */
    double acc;  /* fraction of correct argmax predictions */
    int64_t count;
} peft_metrics;

/* Evaluate on a dataset (no gradients). */
PEFT_API peft_status peft_trainer_evaluate(peft_trainer *tr, const peft_dataset *ds, peft_metrics *out);

typedef struct peft_fit_result {
    int64_t steps;
    int epochs;
    double best_val_loss;   /* NaN without validation data */
    int64_t best_step;
    double val_loss_before; /* before training (NaN without validation data) */
    double val_loss_after;  /* after training (with the best weights restored if so) */
    double ref_loss_before; /* on the reference set (peft_trainer_set_reference), else NaN */
    double ref_loss_after;
    double forgetting;      /* ref_loss_after - ref_loss_before */
    int stopped_early;
    double seconds;
} peft_fit_result;

/* A reference set (e.g. the general domain) whose loss fit reports before and
 * after training: the measure of catastrophic forgetting. Borrowed. */
PEFT_API peft_status peft_trainer_set_reference(peft_trainer *tr, const peft_dataset *ref);

/* Train for opts.epochs (or max_steps), evaluating on val (may be NULL), with
 * early stopping. Resumes where a loaded checkpoint left off. */
PEFT_API peft_status peft_trainer_fit(peft_trainer *tr, const peft_dataset *train, const peft_dataset *val,
                                      peft_fit_result *out);

/* Exactly one more epoch (the schedule still spans opts.epochs / max_steps),
 * with the same evaluation and early-stopping rules. out->stopped_early says
 * when patience ran out. */
PEFT_API peft_status peft_trainer_epoch(peft_trainer *tr, const peft_dataset *train, const peft_dataset *val,
                                        peft_fit_result *out);

PEFT_API int64_t peft_trainer_steps(const peft_trainer *tr);
PEFT_API peft_opt *peft_trainer_optimizer(const peft_trainer *tr);

/* ---- checkpoints ----
 * Trainable tensors, optimizer state, schedule position, data-order position,
 * early-stopping state and the context PRNG, written atomically (temporary
 * file, fsync, rename) with a CRC32 checked on load. Loading checks that the
 * checkpoint belongs to the same strategy, trainable tensors and optimizer. */
PEFT_API peft_status peft_trainer_save_checkpoint(peft_trainer *tr, const char *path);
PEFT_API peft_status peft_trainer_load_checkpoint(peft_trainer *tr, const char *path);

#ifdef __cplusplus
}
#endif
#endif /* PEFT_TRAIN_H */
