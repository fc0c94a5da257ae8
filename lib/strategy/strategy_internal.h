/* The adapter's layout and the built-in strategy tables. Never installed. */
#ifndef PEFT_STRATEGY_INTERNAL_H
#define PEFT_STRATEGY_INTERNAL_H

#include "../nn/model_internal.h"

#define PEFT__MAX_GROUPS 32

typedef struct peft__trainable {
    char name[PEFT__NAME_MAX];
    peft_tensor *t;
    int group;
    bool owned; /* created by the adapter (freed with it) */
} peft__trainable;

typedef struct peft__group {
    char name[48];
    float lr_scale;
    float weight_decay; /* < 0: the optimizer's */
} peft__group;

/* Cached base-model features of one example (feature extraction). */
typedef struct peft__feature {
    float *data; /* CLASSIFY: [C]; LM: [T, C] */
    int64_t T;
    uint64_t set; /* the batch's example_set it was computed for */
} peft__feature;

struct peft_adapter {
    peft_ctx *ctx;
    peft_model *model;
    peft_strategy strat;
    peft_task task;
    void *state;
    peft__group groups[PEFT__MAX_GROUPS];
    int n_groups;
    peft__trainable *train;
    size_t n_train, cap_train;
    bool *hooked; /* [n_linears] */
    bool hidden_hooked;
    /* classification head: depth hidden layers then the output layer */
    int head_depth;
    float head_dropout;
    peft_activation head_act;
    peft_tensor *head_w[9], *head_b[9];
    /* feature extraction */
    bool cache_features;
    peft_tensor *lm_head; /* LM feature mode: the trainable output layer */
    peft__feature *cache;
    size_t cache_cap;
    bool merged;
    /* set while peft_adapter_loss(training = 1) runs the model: strategies'
     * own dropout (LoRA) is on only then (hooks have no training argument) */
    bool training;
};

/* y = act(x) with the op of that activation. */
peft_status peft__activate(peft_ctx *ctx, peft_activation act, peft_tensor *x, peft_tensor **y);

/* Feature mode: the base runs once per example; the head trains on cached features. */
void peft__adapter_cache_features(peft_adapter *ad, bool on);

/* Built-in strategy tables (registered by peft__register_builtins). */
extern const peft_strategy peft__strategy_full;
extern const peft_strategy peft__strategy_bitfit;
extern const peft_strategy peft__strategy_dense;
extern const peft_strategy peft__strategy_feature;
extern const peft_strategy peft__strategy_lora;
extern const peft_strategy peft__strategy_ia3;

/* Look up a strategy (registering the built-ins on first use). */
const peft_strategy *peft__strategy_find(peft_ctx *ctx, const char *name);

/* Check a strategy's option struct: NULL is fine (defaults), otherwise its
 * struct_size must be `expected`. */
peft_status peft__check_opts(peft_adapter *ad, const void *opts, size_t expected, const char *strategy);

#endif
