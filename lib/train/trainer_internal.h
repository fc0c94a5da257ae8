/* The trainer's layout, shared with the checkpoint code. Never installed. */
#ifndef PEFT_TRAINER_INTERNAL_H
#define PEFT_TRAINER_INTERNAL_H

#include "../data/dataset_internal.h"
#include "../internal.h"

struct peft_trainer {
    peft_ctx *ctx;
    peft_adapter *ad;
    peft_train_opts o;
    peft_opt *opt;
    peft_schedule sched;
    bool sched_ready;
    /* position: optimizer steps, micro-batches in the open window, epoch and
     * how far into its (seeded) order we are */
    int64_t step;
    int micro;
    int epoch;
    size_t epoch_pos;
    int64_t *order;
    size_t order_n;
    /* last step */
    double loss_acc;
    int64_t tokens_acc;
    float last_loss, last_lr;
    /* validation and early stopping */
    double best_val, last_val, val_before;
    int64_t best_step;
    int bad_evals;
    bool stopped_early;
    float *best; /* copy of the trainable weights at the best evaluation */
    bool has_best;
    const peft_dataset *ref;
    double ref_before;
    double t0, elapsed;
    peft__batch_buf buf;
};

double peft__now(void);

#endif
