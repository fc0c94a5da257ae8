/* libpeft — datasets, the trainer, evaluation, early stopping, checkpoints.
 *
 * Intended use:
 *
 *   peft_adapter *ad;  peft_adapter_attach(model, "lora", &task, &lora_opts, &ad);
 *   peft_dataset *all, *train, *val;
 *   peft_dataset_opts d = peft_dataset_opts_default();  d.seq_len = 128;
 *   peft_dataset_load(ctx, tok, "corpus.jsonl.gz", &d, &all);
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

/* ---- datasets ----
 *
 * A dataset is a store of token ids (int32, one flat array with offsets), with
 * per-example labels (classification) or a per-token loss mask (prompt /
 * completion), and views of it (splits). Files are read and tokenized as a
 * stream: the raw text is never held whole, only a read buffer (256 KiB), the
 * first 64 KiB (format detection) and the document or line being tokenized.
 * The tokens of every example are kept in memory (4 bytes each), so a corpus
 * must fit in memory as tokens, not as text; a single document (or JSONL/TSV
 * line) must fit in memory as text.
 *
 * Formats (peft_data_format), each possibly gzip-compressed (detected from the
 * gzip magic bytes, not the name):
 *  - text:  causal-LM documents separated by blank lines and/or lines holding
 *           a single "%" (the fortune file format; see peft_data_sep).
 *  - jsonl: one JSON object per line: {"text": ...} (LM document),
 *           {"prompt": ..., "completion": ...} (LM, loss on the completion
 *           tokens only) or {"text": ..., "label": ...} (classification; the
 *           label a string or an integer). Blank lines are ignored.
 *  - tsv:   "label<TAB>text" lines (classification).
 * Auto detection: the extension (after removing ".gz") .jsonl/.json/.ndjson,
 * .tsv, .txt/.text; else the content: a first line starting with "{" is
 * JSONL, lines that all read "label<TAB>text" (label <= 64 bytes without
 * spaces) are TSV, anything else is text.
 *
 * Examples:
 *  - LM documents get BOS first (opts.add_bos) and EOS last (opts.add_eos),
 *    then are packed into sequences of seq_len tokens: across documents
 *    (PEFT_PACK_ACROSS, the BOS marks where one starts) or each document on
 *    its own (PEFT_PACK_WITHIN_DOC: a sequence never holds two documents; a
 *    long document fills several, its last one shorter and padded in
 *    batches). A sequence of one token (nothing to predict) is dropped.
 *  - prompt/completion pairs are one sequence each: BOS, the prompt's tokens,
 *    the completion's tokens, EOS (both tokenized on their own, so the
 *    boundary is exact; a SentencePiece tokenizer adds its dummy-prefix space
 *    to each). The loss mask marks the completion tokens (and EOS): batches
 *    carry it as peft_batch.loss_mask and prompt tokens are never targets.
 *  - classification examples are one sequence each (BOS, text, EOS).
 * Sequences longer than seq_len (prompt/completion, classification) follow
 * opts.overflow: truncate (classification keeps the start of the text;
 * prompt/completion drops the oldest prompt tokens first and cuts the end of
 * the completion only when it alone is too long; BOS and EOS are kept except
 * EOS of a cut completion), refuse (PEFT_ERR_FORMAT naming file:line) or drop
 * (counted in peft_dataset_n_skipped).
 *
 * Bad input: a line that is not a JSON object, lacks a field, has a label of
 * the wrong type or outside opts.classes, or a TSV line without a TAB, is
 * PEFT_ERR_FORMAT with "file:line: what"; with opts.skip_bad_lines it is
 * skipped and counted instead. No examples at all is PEFT_ERR_FORMAT.
 * Invalid UTF-8 follows opts.utf8 (kept as bytes by default: the bytes and
 * GPT-2 tokenizers encode any bytes, SentencePiece uses byte fallback).
 */

typedef struct peft_dataset peft_dataset;

/* Values are fixed; new ones are only appended. */
typedef enum peft_data_format {
    PEFT_DATA_AUTO = 0,
    PEFT_DATA_TEXT = 1,
    PEFT_DATA_JSONL = 2,
    PEFT_DATA_TSV = 3,
    PEFT_DATA_FORMAT_COUNT
} peft_data_format;

typedef enum peft_data_task {
    PEFT_DATA_TASK_AUTO = 0,    /* from the format and the fields of the first JSONL object */
    PEFT_DATA_TASK_LM = 1,      /* JSONL labels are ignored; TSV is refused */
    PEFT_DATA_TASK_CLASSIFY = 2 /* text and prompt/completion are refused */
} peft_data_task;

typedef enum peft_data_pack {
    PEFT_PACK_ACROSS = 0,    /* concatenate documents and cut every seq_len tokens */
    PEFT_PACK_WITHIN_DOC = 1 /* never let a sequence span two documents (pad instead) */
} peft_data_pack;

typedef enum peft_data_sep {
    PEFT_SEP_AUTO = 0,    /* "%" lines if the first 64 KiB hold one (a fortune file), else blank lines */
    PEFT_SEP_BLANK = 1,   /* blank (empty or whitespace-only) lines */
    PEFT_SEP_PERCENT = 2, /* lines holding a single "%"; blank lines stay inside documents */
    PEFT_SEP_ANY = 3      /* either */
} peft_data_sep;

typedef enum peft_data_overflow {
    PEFT_OVERFLOW_TRUNCATE = 0, /* counted in peft_dataset_n_truncated */
    PEFT_OVERFLOW_REFUSE = 1,   /* PEFT_ERR_FORMAT naming file:line */
    PEFT_OVERFLOW_DROP = 2      /* skip the example, counted in peft_dataset_n_skipped */
} peft_data_overflow;

typedef enum peft_data_utf8 {
    PEFT_UTF8_KEEP = 0,    /* pass the bytes to the tokenizer unchanged */
    PEFT_UTF8_REPLACE = 1, /* each invalid byte becomes U+FFFD */
    PEFT_UTF8_REJECT = 2   /* a bad line (error, or skipped with skip_bad_lines) */
} peft_data_utf8;
/* Documents / lines with invalid UTF-8 are counted in peft_dataset_n_invalid_utf8
 * whatever the policy. */

typedef struct peft_dataset_opts {
    size_t struct_size;
    peft_data_format format;     /* default auto */
    peft_data_task task;         /* default auto */
    int64_t seq_len;             /* tokens per sequence, 2..2^20 (default 128) */
    int add_bos;                 /* 1 yes, 0 no, -1 when the tokenizer has one (default -1) */
    int add_eos;                 /* same (default 0) */
    peft_data_pack pack;         /* LM documents (default across) */
    peft_data_sep sep;           /* text documents (default auto) */
    peft_data_overflow overflow; /* default truncate */
    int skip_bad_lines;          /* default 0 */
    peft_data_utf8 utf8;         /* default keep */
    /* classification: the class names in id order (copied; NULL = the sorted
     * distinct labels of the data, numerically when all are integers; JSON
     * integer labels are then the class ids themselves). With a list, a JSON
     * integer label is an index into it. */
    const char *const *classes;
    int n_classes;
} peft_dataset_opts;

PEFT_API peft_dataset_opts peft_dataset_opts_default(void);

/* Load a dataset from a file (see above). opts may be NULL (defaults). */
PEFT_API peft_status peft_dataset_load(peft_ctx *ctx, peft_tokenizer *tok, const char *path,
                                       const peft_dataset_opts *opts, peft_dataset **out);
/* The same from len bytes in memory (copied as it is read; gzip allowed).
 * name (may be NULL: "<memory>") starts error messages. */
PEFT_API peft_status peft_dataset_from_buffer(peft_ctx *ctx, peft_tokenizer *tok, const void *data, size_t len,
                                              const char *name, const peft_dataset_opts *opts, peft_dataset **out);

/* Shorthands: text format, seq_len, packed across documents (from_text reads
 * memory, load_text a file). */
PEFT_API peft_status peft_dataset_from_text(peft_ctx *ctx, peft_tokenizer *tok, const char *text, size_t len,
                                            int64_t seq_len, peft_dataset **out);
PEFT_API peft_status peft_dataset_load_text(peft_ctx *ctx, peft_tokenizer *tok, const char *path, int64_t seq_len,
                                            peft_dataset **out);
/* Shorthand: TSV "label<TAB>text" classification; labels become class ids in
 * sorted order; texts longer than max_len tokens are truncated (keeping the
 * start). */
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

/* Example i of the view: its tokens (borrowed, valid as long as the store),
 * its loss mask (1 = target; NULL when every token is one) and its label (-1
 * for LM data). Any output may be NULL. */
PEFT_API peft_status peft_dataset_example(const peft_dataset *ds, size_t i, const int32_t **ids, int64_t *len,
                                          const uint8_t **loss_mask, int32_t *label);
/* What the load that made the data saw (a split reports its parent's; data
 * from peft_dataset_from_ids reports PEFT_DATA_AUTO and zeros): the format
 * read, lines/examples skipped (bad lines with skip_bad_lines, or
 * dropped by PEFT_OVERFLOW_DROP), examples truncated, documents/lines with
 * invalid UTF-8. */
PEFT_API peft_data_format peft_dataset_format(const peft_dataset *ds);
PEFT_API size_t peft_dataset_n_skipped(const peft_dataset *ds);
PEFT_API size_t peft_dataset_n_truncated(const peft_dataset *ds);
PEFT_API size_t peft_dataset_n_invalid_utf8(const peft_dataset *ds);

/* A deterministic split by seed: a shuffled fraction val_frac goes to *val
 * (at least 1 example each when possible). The parts share the parent's
 * storage and must be destroyed before it. */
PEFT_API peft_status peft_dataset_split(const peft_dataset *ds, double val_frac, uint64_t seed, peft_dataset **train,
                                        peft_dataset **val);
/* Train / validation / test by seed: the validation part is the same as
 * peft_dataset_split(ds, val_frac, seed) gives, the test part comes next in
 * the same shuffled order, the rest trains. Each part gets at least one
 * example (the dataset needs 3). Same sharing rules as peft_dataset_split. */
PEFT_API peft_status peft_dataset_split3(const peft_dataset *ds, double val_frac, double test_frac, uint64_t seed,
                                         peft_dataset **train, peft_dataset **val, peft_dataset **test);

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
