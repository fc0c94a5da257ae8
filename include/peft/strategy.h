/* libpeft — fine-tuning strategies and the adapter that applies one to a model.
 *
 * A strategy is a table of functions (peft_strategy). The built-ins — "full",
 * "lora", "ia3", "bitfit", "dense", "feature" — register through the same
 * public call a host program uses for its own (peft_strategy_register), into
 * the context's registry (no global state).
 *
 * Attaching a strategy to a model makes a peft_adapter: it freezes the base,
 * declares or creates the trainable tensors (in parameter groups with their
 * own learning-rate scale and weight decay), may hook the model's projections,
 * and owns the task head (a classifier for sequence classification). The
 * trainer (train.h) optimises exactly the adapter's trainable tensors.
 *
 * Layout convention for projections: W is [out, in], y = x W^T + b.
 */
#ifndef PEFT_STRATEGY_H
#define PEFT_STRATEGY_H

#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- tasks ---- */

typedef enum peft_task_kind {
    PEFT_TASK_LM = 0,       /* causal LM: next-token loss (a loss mask can exclude prompt tokens) */
    PEFT_TASK_CLASSIFY = 1  /* sequence classification: head on a pooled hidden state */
} peft_task_kind;

typedef enum peft_pooling {
    PEFT_POOL_LAST = 0, /* hidden state of the last real token */
    PEFT_POOL_MEAN = 1  /* mean over real tokens */
} peft_pooling;

typedef struct peft_task {
    size_t struct_size;
    peft_task_kind kind;
    int n_classes;        /* CLASSIFY: number of labels (>= 2) */
    peft_pooling pooling; /* CLASSIFY */
    int feature_layer;    /* CLASSIFY: hidden state after this block (-1 = after the final norm) */
} peft_task;

PEFT_API peft_task peft_task_default(peft_task_kind kind);

/* One batch. ids: [B, T] token ids. mask: 1 for real tokens, 0 for padding
 * (NULL: all real; padding must come after the real tokens of a row).
 * loss_mask (LM): 1 where token t is a prediction target (NULL: every real
 * token after the first). labels (CLASSIFY): [B]. All arrays are borrowed. */
typedef struct peft_batch {
    int64_t B, T;
    const int32_t *ids;
    const int32_t *mask;
    const int32_t *loss_mask;
    const int32_t *labels;
    /* Optional stable example indices [B] (0 <= id < 2^31): strategies that
     * cache features (feature extraction) compute the base model once per
     * example and reuse it in later epochs. NULL: no caching. */
    const int64_t *example_ids;
    /* Which collection example_ids refer to (any value unique to it, e.g. the
     * address of the dataset): cached features are only reused for the same set. */
    uint64_t example_set;
} peft_batch;

/* ---- strategies ---- */

typedef struct peft_adapter peft_adapter;

typedef struct peft_strategy {
    size_t struct_size;
    const char *name;        /* unique in a context; copied */
    const char *description; /* one line; copied (may be NULL) */
    /* Called once by peft_adapter_attach: freeze or unfreeze, create or declare
     * trainable tensors, hook projections. `opts` is the strategy's own option
     * struct (NULL = its defaults). Store private state with
     * peft_adapter_set_state. Required. */
    peft_status (*attach)(peft_adapter *ad, const void *opts);
    /* Start of each epoch (0-based), e.g. gradual unfreezing. May be NULL. */
    peft_status (*on_epoch)(peft_adapter *ad, int epoch);
    /* Fold the trained change into the base weights / take it out again
     * exactly. May be NULL (PEFT_ERR_UNSUPPORTED). */
    peft_status (*merge)(peft_adapter *ad);
    peft_status (*unmerge)(peft_adapter *ad);
    /* Free private state (hooks and created tensors are released by the adapter). May be NULL. */
    void (*detach)(peft_adapter *ad);
} peft_strategy;

/* Register a strategy in the context (the table is copied). A second
 * registration of the same name is PEFT_ERR_INVALID_ARG. */
PEFT_API peft_status peft_strategy_register(peft_ctx *ctx, const peft_strategy *s);
/* Number of registered strategies (built-ins included) and their names. */
PEFT_API size_t peft_strategy_count(peft_ctx *ctx);
PEFT_API const char *peft_strategy_name(peft_ctx *ctx, size_t i);

/* ---- the adapter ---- */

/* Attach strategy `name` to a model for a task (NULL = causal LM). The model
 * must outlive the adapter, and carry at most one adapter at a time. */
PEFT_API peft_status peft_adapter_attach(peft_model *model, const char *name, const peft_task *task,
                                         const void *opts, peft_adapter **out);
/* Detach (unhook, free what the adapter created, freeze the base again). NULL is a no-op. */
PEFT_API void peft_adapter_destroy(peft_adapter *ad);

PEFT_API peft_model *peft_adapter_model(const peft_adapter *ad);
PEFT_API peft_ctx *peft_adapter_ctx(const peft_adapter *ad);
PEFT_API const char *peft_adapter_strategy(const peft_adapter *ad);
PEFT_API const peft_task *peft_adapter_task(const peft_adapter *ad);

/* For strategies: private state. */
PEFT_API void peft_adapter_set_state(peft_adapter *ad, void *state);
PEFT_API void *peft_adapter_state(const peft_adapter *ad);

/* Parameter groups: group 0 ("default", lr scale 1, the optimizer's weight
 * decay; wd < 0 means "the optimizer's") always exists. */
PEFT_API peft_status peft_adapter_add_group(peft_adapter *ad, const char *name, float lr_scale,
                                            float weight_decay, int *group);
/* A new trainable f32 tensor owned by the adapter (zero-filled). */
PEFT_API peft_status peft_adapter_new_param(peft_adapter *ad, const char *name, int ndim, const int64_t *shape,
                                            int group, peft_tensor **out);
/* Make an existing f32 tensor of the model trainable (it stays the model's). */
PEFT_API peft_status peft_adapter_add_param(peft_adapter *ad, const char *name, peft_tensor *t, int group);

/* What trains: count, i-th (name, tensor, group), total elements. */
PEFT_API size_t peft_adapter_n_trainable(const peft_adapter *ad);
PEFT_API peft_status peft_adapter_trainable(const peft_adapter *ad, size_t i, const char **name,
                                            peft_tensor **tensor, int *group);
PEFT_API int64_t peft_adapter_trainable_numel(const peft_adapter *ad);
PEFT_API size_t peft_adapter_n_groups(const peft_adapter *ad);
PEFT_API peft_status peft_adapter_group(const peft_adapter *ad, int group, const char **name, float *lr_scale,
                                        float *weight_decay);

/* Model projections a strategy may hook (every Linear / Conv1D of the blocks,
 * not the LM head), by Hugging Face module path ("transformer.h.0.attn.c_attn").
 * The hook computes y from x in place of y = x W^T + b and must record its ops. */
typedef peft_status (*peft_linear_hook)(peft_ctx *ctx, peft_tensor *x, peft_tensor *w, peft_tensor *b, void *user,
                                        peft_tensor **y);
PEFT_API size_t peft_model_n_linears(const peft_model *model);
PEFT_API peft_status peft_model_linear(const peft_model *model, size_t i, const char **name, peft_tensor **w,
                                       peft_tensor **b);
/* Set (fn != NULL) or clear the hook of projection i; an adapter clears its hooks when destroyed. */
PEFT_API peft_status peft_adapter_hook_linear(peft_adapter *ad, size_t i, peft_linear_hook fn, void *user);

/* Does a module path match a target list? "c_attn" matches any module whose
 * path equals it or ends with ".c_attn"; a comma-separated list matches any
 * entry; "all-linear" matches every projection. (Hugging Face PEFT rules.) */
PEFT_API int peft_target_matches(const char *targets, const char *module);

/* Hidden transform for the LM task: applied to the final hidden state before
 * the (frozen) LM head, e.g. new dense layers. */
typedef peft_status (*peft_hidden_hook)(peft_ctx *ctx, peft_tensor *h, void *user, peft_tensor **out);
PEFT_API peft_status peft_adapter_hook_hidden(peft_adapter *ad, peft_hidden_hook fn, void *user);

/* Activations of the layers strategies add. */
typedef enum peft_activation {
    PEFT_ACT_GELU = 0, /* tanh approximation */
    PEFT_ACT_RELU = 1,
    PEFT_ACT_SILU = 2,
    PEFT_ACT_COUNT
} peft_activation;

/* The classification head (CLASSIFY tasks): an MLP of `depth` hidden layers of
 * `width` (activation, then dropout p) and an output layer to n_classes,
 * created by attach (depth 0 = a linear classifier). Strategies that want a
 * deeper head call this from their attach; otherwise a linear one is made. */
PEFT_API peft_status peft_adapter_set_head(peft_adapter *ad, int depth, int64_t width, peft_activation act,
                                           float dropout);

/* ---- running ---- */

/* The training loss of a batch (recorded on the tape when gradients are on):
 * LM: mean next-token cross-entropy over the loss mask; CLASSIFY: mean
 * cross-entropy of the head's logits against the labels. training = 1
 * enables dropout. */
PEFT_API peft_status peft_adapter_loss(peft_adapter *ad, const peft_batch *batch, int training,
                                       peft_tensor **loss);
/* Evaluate without gradients: summed loss, number of predictions, correct
 * predictions (argmax; LM: next tokens, CLASSIFY: labels). */
PEFT_API peft_status peft_adapter_eval(peft_adapter *ad, const peft_batch *batch, double *loss_sum,
                                       int64_t *count, int64_t *correct);
/* CLASSIFY: the logits [B, n_classes] of a batch (no gradients), written to out. */
PEFT_API peft_status peft_adapter_classify(peft_adapter *ad, const peft_batch *batch, float *out);

/* Strategy hooks, called by the trainer (or the host). */
PEFT_API peft_status peft_adapter_on_epoch(peft_adapter *ad, int epoch);
PEFT_API peft_status peft_adapter_merge(peft_adapter *ad);
PEFT_API peft_status peft_adapter_unmerge(peft_adapter *ad);

/* Save / load the trainable tensors (safetensors, names as declared). Load
 * checks every name and shape. */
PEFT_API peft_status peft_adapter_save(const peft_adapter *ad, const char *path);
PEFT_API peft_status peft_adapter_load(peft_adapter *ad, const char *path);

/* ---- options of the built-in strategies ---- */

/* "lora": y = x W^T + b + s * (dropout(x) A^T) B^T on every targeted
 * projection, A [r, in] (Kaiming-uniform), B [out, r] (zeros), s = alpha/r
 * (alpha/sqrt(r) with use_rslora); the base is frozen. Trainable tensors are
 * named like Hugging Face PEFT's saved keys,
 * "base_model.model.<module>.lora_A.weight" / ".lora_B.weight", and count
 * r * (in + out) per projection. Dropout is active only inside
 * peft_adapter_loss(training = 1). Merge adds s * B A to W (f32 weights only)
 * and keeps a copy of each targeted W until unmerge, which restores it bit for
 * bit; destroying a merged adapter leaves the merged weights in place. */
typedef struct peft_lora_opts {
    size_t struct_size;
    int r;               /* rank (default 8) */
    float alpha;         /* default 8 */
    float dropout;       /* on the LoRA input (default 0) */
    int use_rslora;      /* scale alpha/sqrt(r) instead of alpha/r */
    const char *targets; /* module names or "all-linear"; NULL = the architecture's default
                            (gpt2: "c_attn"; llama: "q_proj,v_proj") */
} peft_lora_opts;
PEFT_API peft_lora_opts peft_lora_opts_default(void);

/* "ia3": one vector per targeted projection, initialised to ones, named
 * "base_model.model.<module>.ia3_l" like PEFT's saved keys: [out, 1] scaling
 * the output (y = l * (x W^T + b)), or for feed-forward modules [1, in]
 * scaling the input (y = (l * x) W^T + b). feedforward must only name
 * targeted modules. Merge scales W's rows (and b) or columns, keeping copies
 * until unmerge restores them bit for bit. */
typedef struct peft_ia3_opts {
    size_t struct_size;
    const char *targets;     /* NULL = default (gpt2: "c_attn,mlp.c_proj"; llama: "k_proj,v_proj,down_proj") */
    const char *feedforward; /* input-scaled targets; NULL = default (gpt2: "mlp.c_proj"; llama: "down_proj") */
} peft_ia3_opts;
PEFT_API peft_ia3_opts peft_ia3_opts_default(void);

typedef struct peft_full_opts {
    size_t struct_size;
    int top_blocks; /* 0 = every parameter; N = only the top N blocks (+ final norm and head) */
} peft_full_opts;
PEFT_API peft_full_opts peft_full_opts_default(void);

typedef struct peft_dense_opts {
    size_t struct_size;
    int depth;                  /* hidden layers (default 1) */
    int64_t width;              /* 0 = the model's hidden size */
    float dropout;              /* default 0.1 */
    peft_activation activation; /* default GELU */
} peft_dense_opts;
PEFT_API peft_dense_opts peft_dense_opts_default(void);

typedef struct peft_feature_opts {
    size_t struct_size;
    int depth;                  /* classifier: 0 = logistic regression (default), >0 = MLP */
    int64_t width;              /* MLP width (0 = hidden size) */
    peft_activation activation; /* MLP activation (default GELU) */
} peft_feature_opts;
PEFT_API peft_feature_opts peft_feature_opts_default(void);

#ifdef __cplusplus
}
#endif
#endif /* PEFT_STRATEGY_H */
