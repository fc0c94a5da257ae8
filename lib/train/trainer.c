/* The trainer: micro-batches, gradient accumulation, clipping, the schedule,
 * evaluation, early stopping with best-weight restore, forgetting, and the
 * bookkeeping a checkpoint needs to resume bit for bit. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "trainer_internal.h"

peft_train_opts peft_train_opts_default(void)
{
    peft_train_opts o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.optimizer = PEFT_OPT_ADAMW;
    o.lr = 1e-3f;
    o.weight_decay = 0.0f;
    o.beta1 = 0.9f;
    o.beta2 = 0.999f;
    o.eps = 1e-8f;
    o.schedule = peft_schedule_default(PEFT_SCHED_CONSTANT);
    o.max_grad_norm = 1.0f;
    o.batch_size = 8;
    o.grad_accum = 1;
    o.epochs = 1;
    o.restore_best = 1;
    o.shuffle = 1;
    o.seed = 1;
    o.log_every = 1;
    return o;
}

double peft__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static peft_status check_opts(peft_ctx *ctx, const peft_train_opts *o)
{
    if (o->struct_size != sizeof *o)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_trainer_create: opts.struct_size %zu (use peft_train_opts_default)",
                          o->struct_size);
    if (!isfinite(o->lr) || o->lr < 0)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_trainer_create: learning rate %g is not a finite value >= 0", o->lr);
    if (!isfinite(o->weight_decay) || o->weight_decay < 0)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_trainer_create: weight_decay %g", o->weight_decay);
    if (!isfinite(o->max_grad_norm) || o->max_grad_norm < 0)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_trainer_create: max_grad_norm %g", o->max_grad_norm);
    if (o->batch_size < 1 || o->grad_accum < 1 || o->epochs < 0 || o->max_steps < 0 || o->eval_every < 0 ||
        o->patience < 0 || o->log_every < 0 || !(o->min_delta >= 0))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG,
                          "peft_trainer_create: batch_size %d, grad_accum %d, epochs %d, max_steps %lld, eval_every %lld, "
                          "patience %d, min_delta %g",
                          o->batch_size, o->grad_accum, o->epochs, (long long)o->max_steps, (long long)o->eval_every,
                          o->patience, o->min_delta);
    if (o->schedule.kind != PEFT_SCHED_CONSTANT || o->schedule.warmup_steps) {
        peft_schedule s = o->schedule;
        /* unset: max_steps, else fit sets it from the data (and checks again),
         * so only a warmup longer than max_steps can be refused here */
        if (s.total_steps == 0) s.total_steps = o->max_steps > 0 ? o->max_steps : s.warmup_steps > 0 ? s.warmup_steps : 1;
        return peft_schedule_check(ctx, &s);
    }
    return PEFT_OK;
}

peft_status peft_trainer_create(peft_adapter *ad, const peft_train_opts *opts, peft_trainer **out)
{
    if (!ad) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = peft_adapter_ctx(ad);
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_trainer_create: out is NULL");
    *out = NULL;
    peft_train_opts o = opts ? *opts : peft_train_opts_default();
    peft_status st = check_opts(ctx, &o);
    if (st != PEFT_OK) return st;
    if (peft_adapter_n_trainable(ad) == 0)
        return peft__fail(ctx, PEFT_ERR_STATE, "peft_trainer_create: strategy \"%s\" made nothing trainable",
                          peft_adapter_strategy(ad));
    peft_trainer *tr = peft__calloc(ctx, 1, sizeof *tr);
    if (!tr) return peft__fail(ctx, PEFT_ERR_NOMEM, "peft_trainer_create: out of memory");
    tr->ctx = ctx;
    tr->ad = ad;
    tr->o = o;
    tr->best_val = NAN;
    peft_opt_opts oo = peft_opt_opts_default(o.optimizer);
    oo.lr = o.lr;
    oo.weight_decay = o.weight_decay;
    if (o.optimizer == PEFT_OPT_ADAMW) {
        oo.beta1 = o.beta1;
        oo.beta2 = o.beta2;
        oo.eps = o.eps;
    } else {
        oo.momentum = o.momentum;
        oo.nesterov = o.nesterov;
    }
    st = peft_opt_create(ctx, &oo, &tr->opt);
    /* adapter groups -> optimizer groups (group 0 exists in both) */
    int map[64] = {0};
    for (int g = 1; st == PEFT_OK && g < (int)peft_adapter_n_groups(ad) && g < 64; g++) {
        float scale, wd;
        peft_adapter_group(ad, g, NULL, &scale, &wd);
        st = peft_opt_add_group(tr->opt, scale, wd < 0 ? o.weight_decay : wd, &map[g]);
    }
    for (size_t i = 0; st == PEFT_OK && i < peft_adapter_n_trainable(ad); i++) {
        peft_tensor *t;
        int g;
        peft_adapter_trainable(ad, i, NULL, &t, &g);
        st = peft_opt_add_param(tr->opt, t, map[g < 64 ? g : 0]);
    }
    if (st == PEFT_OK) st = peft_opt_finalize(tr->opt);
    if (st == PEFT_OK) st = peft_opt_zero_grad(tr->opt);
    if (st != PEFT_OK) {
        peft_trainer_destroy(tr);
        return st;
    }
    *out = tr;
    return PEFT_OK;
}

void peft_trainer_destroy(peft_trainer *tr)
{
    if (!tr) return;
    peft_ctx *ctx = tr->ctx;
    peft_opt_destroy(tr->opt);
    peft__batch_buf_free(ctx, &tr->buf);
    peft__free(ctx, tr->best);
    peft__free(ctx, tr->order);
    peft__free(ctx, tr);
}

int64_t peft_trainer_steps(const peft_trainer *tr) { return tr ? tr->step : 0; }
peft_opt *peft_trainer_optimizer(const peft_trainer *tr) { return tr ? tr->opt : NULL; }

peft_status peft_trainer_set_reference(peft_trainer *tr, const peft_dataset *ref)
{
    if (!tr) return PEFT_ERR_INVALID_ARG;
    tr->ref = ref;
    return PEFT_OK;
}

static float current_lr(const peft_trainer *tr)
{
    return tr->o.lr * peft_schedule_factor(&tr->sched, tr->step);
}

/* The optimizer step at the end of an accumulation window. */
static peft_status apply_step(peft_trainer *tr)
{
    peft_status st = PEFT_OK;
    float lr = current_lr(tr);
    if (tr->o.max_grad_norm > 0) {
        float norm;
        st = peft_opt_clip_grad_norm(tr->opt, tr->o.max_grad_norm, &norm);
        if (st == PEFT_OK && !isfinite(norm))
            st = peft__fail(tr->ctx, PEFT_ERR_NUMERIC, "training step %lld: the gradient norm is %g; step refused, weights untouched",
                            (long long)tr->step, norm);
    }
    if (st == PEFT_OK) st = peft_opt_set_lr(tr->opt, lr);
    if (st == PEFT_OK) st = peft_opt_step(tr->opt);
    peft_opt_zero_grad(tr->opt);
    tr->micro = 0;
    if (st == PEFT_OK) {
        tr->step++;
        tr->last_lr = lr;
        tr->last_loss = (float)(tr->loss_acc / tr->o.grad_accum);
    }
    tr->loss_acc = 0;
    return st;
}

peft_status peft_trainer_step(peft_trainer *tr, const peft_batch *batch, float *loss)
{
    if (!tr) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = tr->ctx;
    if (!tr->sched_ready) { /* without fit: the schedule as given (total_steps from max_steps when unset) */
        tr->sched = tr->o.schedule;
        if (tr->sched.total_steps == 0) tr->sched.total_steps = tr->o.max_steps > 0 ? tr->o.max_steps : 1;
        tr->sched_ready = true;
    }
    peft_tensor *l, *scaled;
    peft_status st = peft_adapter_loss(tr->ad, batch, 1, &l);
    if (st != PEFT_OK) {
        peft_graph_release(ctx);
        return st;
    }
    float lv = *(const float *)peft_tensor_data(l);
    if (loss) *loss = lv;
    if (!isfinite(lv)) {
        peft_graph_release(ctx);
        return peft__fail(ctx, PEFT_ERR_NUMERIC, "training step %lld: the loss is %g; step refused, weights untouched",
                          (long long)tr->step, lv);
    }
    /* accumulate the mean over the window: each micro-batch contributes 1/accum */
    st = tr->o.grad_accum > 1 ? peft_scale(ctx, l, 1.0f / (float)tr->o.grad_accum, &scaled) : PEFT_OK;
    if (st == PEFT_OK) st = peft_backward(ctx, tr->o.grad_accum > 1 ? scaled : l, NULL);
    else peft_graph_release(ctx);
    if (st != PEFT_OK) return st;
    tr->loss_acc += lv;
    tr->tokens_acc += batch->B * batch->T;
    if (++tr->micro == tr->o.grad_accum) return apply_step(tr);
    return PEFT_OK;
}

peft_status peft_trainer_evaluate(peft_trainer *tr, const peft_dataset *ds, peft_metrics *out)
{
    if (!tr) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = tr->ctx;
    if (!ds || !out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_trainer_evaluate: NULL argument");
    if (ds->n == 0) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_trainer_evaluate: the dataset is empty");
    double loss = 0;
    int64_t count = 0, correct = 0;
    int64_t pos[256];
    const size_t bs = (size_t)tr->o.batch_size < 256 ? (size_t)tr->o.batch_size : 256;
    for (size_t i = 0; i < ds->n; i += bs) {
        size_t n = ds->n - i < bs ? ds->n - i : bs;
        for (size_t k = 0; k < n; k++) pos[k] = (int64_t)(i + k);
        peft_batch b;
        peft_status st = peft__dataset_batch(ds, pos, n, &tr->buf, &b);
        double l;
        int64_t c, r;
        if (st == PEFT_OK) st = peft_adapter_eval(tr->ad, &b, &l, &c, &r);
        if (st != PEFT_OK) return st;
        loss += l, count += c, correct += r;
    }
    if (count == 0) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_trainer_evaluate: no predictions in the dataset");
    out->count = count;
    out->loss = loss / (double)count;
    out->ppl = exp(out->loss);
    out->acc = (double)correct / (double)count;
    return PEFT_OK;
}

/* ---- best weights for early stopping ---- */

static peft_status snapshot(peft_trainer *tr, bool restore)
{
    peft_adapter *ad = tr->ad;
    size_t total = (size_t)peft_adapter_trainable_numel(ad);
    if (!tr->best) {
        tr->best = peft__malloc(tr->ctx, total * sizeof(float));
        if (!tr->best) return peft__fail(tr->ctx, PEFT_ERR_NOMEM, "early stopping: out of memory for a copy of the weights");
    }
    size_t off = 0;
    for (size_t i = 0; i < peft_adapter_n_trainable(ad); i++) {
        peft_tensor *t;
        peft_adapter_trainable(ad, i, NULL, &t, NULL);
        size_t n = (size_t)peft_tensor_numel(t);
        if (restore) memcpy(peft_tensor_data(t), tr->best + off, n * sizeof(float));
        else memcpy(tr->best + off, peft_tensor_data(t), n * sizeof(float));
        off += n;
    }
    tr->has_best = true;
    return PEFT_OK;
}

static void report(peft_trainer *tr, double tokens_per_s, double val_loss, double val_acc, bool *stop)
{
    if (!tr->o.progress) return;
    peft_progress p;
    p.step = tr->step;
    p.total_steps = tr->sched.total_steps;
    p.epoch = tr->epoch;
    p.loss = tr->last_loss;
    p.lr = tr->last_lr;
    p.tokens_per_s = tokens_per_s;
    p.elapsed_s = tr->elapsed + (peft__now() - tr->t0);
    p.val_loss = val_loss;
    p.val_ppl = isnan(val_loss) ? NAN : exp(val_loss);
    p.val_acc = val_acc;
    if (tr->o.progress(&p, tr->o.progress_user)) *stop = true;
}

/* Evaluate, update early stopping; *stop when patience ran out. */
static peft_status validate(peft_trainer *tr, const peft_dataset *val, bool *stop, bool *aborted)
{
    peft_metrics m;
    peft_status st = peft_trainer_evaluate(tr, val, &m);
    if (st != PEFT_OK) return st;
    tr->last_val = m.loss;
    if (isnan(tr->best_val) || m.loss < tr->best_val - tr->o.min_delta) {
        tr->best_val = m.loss;
        tr->best_step = tr->step;
        tr->bad_evals = 0;
        if (tr->o.patience > 0 && tr->o.restore_best && (st = snapshot(tr, false)) != PEFT_OK) return st;
    } else if (tr->o.patience > 0 && ++tr->bad_evals >= tr->o.patience) {
        *stop = true;
        tr->stopped_early = true;
    }
    report(tr, NAN, m.loss, peft_adapter_task(tr->ad)->kind == PEFT_TASK_CLASSIFY ? m.acc : m.acc, aborted);
    return PEFT_OK;
}

/* Train until `until_epoch` epochs are done (or max_steps / early stopping). */
static peft_status fit(peft_trainer *tr, const peft_dataset *train, const peft_dataset *val, int until_epoch,
                       peft_fit_result *out)
{
    if (!tr) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = tr->ctx;
    if (!train || !out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_trainer_fit: train and out are required");
    if (train->n == 0) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_trainer_fit: the training set is empty");
    memset(out, 0, sizeof *out);
    out->best_val_loss = out->val_loss_before = out->val_loss_after = NAN;
    out->ref_loss_before = out->ref_loss_after = out->forgetting = NAN;
    const peft_train_opts *o = &tr->o;
    const size_t bs = (size_t)o->batch_size;
    const int64_t per_epoch = (int64_t)((train->n + bs - 1) / bs);
    const int64_t steps_per_epoch = (per_epoch + o->grad_accum - 1) / o->grad_accum;
    int64_t total = o->max_steps > 0 ? o->max_steps : steps_per_epoch * o->epochs;
    if (total <= 0) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_trainer_fit: nothing to do (0 epochs and no max_steps)");
    tr->sched = o->schedule;
    if (tr->sched.total_steps == 0) tr->sched.total_steps = total;
    tr->sched_ready = true;
    peft_status st = peft_schedule_check(ctx, &tr->sched);
    if (st != PEFT_OK) {
        char why[PEFT__ERRMSG_SIZE];
        snprintf(why, sizeof why, "%s", peft_ctx_errmsg(ctx));
        return peft__fail(ctx, st, "peft_trainer_fit: %s (the run has %lld steps)", why, (long long)total);
    }
    if (!tr->order || tr->order_n != train->n) {
        peft__free(ctx, tr->order);
        tr->order = peft__malloc(ctx, train->n * sizeof *tr->order);
        if (!tr->order) return peft__fail(ctx, PEFT_ERR_NOMEM, "peft_trainer_fit: out of memory");
        tr->order_n = train->n;
    }
    peft_metrics m;
    if (val && tr->step == 0 && (st = peft_trainer_evaluate(tr, val, &m)) == PEFT_OK) tr->val_before = m.loss;
    if (st != PEFT_OK) return st;
    if (!val) tr->val_before = NAN;
    if (tr->ref && tr->step == 0 && (st = peft_trainer_evaluate(tr, tr->ref, &m)) == PEFT_OK) tr->ref_before = m.loss;
    if (st != PEFT_OK) return st;
    tr->t0 = peft__now();
    bool stop = false, aborted = false;
    while (!stop && !aborted && tr->step < total && tr->epoch < until_epoch) {
        if (tr->epoch_pos == 0 && (st = peft_adapter_on_epoch(tr->ad, tr->epoch)) != PEFT_OK) break;
        /* the epoch's order depends only on (seed, epoch): resumable */
        for (size_t i = 0; i < train->n; i++) tr->order[i] = (int64_t)i;
        if (o->shuffle) peft__shuffle(tr->order, train->n, o->seed * 0x9E3779B97F4A7C15ULL + (uint64_t)tr->epoch);
        double t_step = peft__now();
        while (tr->epoch_pos < train->n && tr->step < total && !stop && !aborted) {
            size_t n = train->n - tr->epoch_pos < bs ? train->n - tr->epoch_pos : bs;
            peft_batch b;
            st = peft__dataset_batch(train, tr->order + tr->epoch_pos, n, &tr->buf, &b);
            if (st == PEFT_OK) {
                int64_t before = tr->step;
                st = peft_trainer_step(tr, &b, NULL);
                if (st != PEFT_OK) break;
                tr->epoch_pos += n;
                bool last_of_epoch = tr->epoch_pos >= train->n;
                if (tr->step == before && last_of_epoch) st = apply_step(tr); /* a partial window ends the epoch */
                if (st != PEFT_OK) break;
                if (tr->step > before) {
                    double now = peft__now(), tps = (double)tr->tokens_acc / (now - t_step + 1e-12);
                    tr->tokens_acc = 0;
                    t_step = now;
                    if (o->log_every > 0 && tr->step % o->log_every == 0) report(tr, tps, NAN, NAN, &aborted);
                    if (val && o->eval_every > 0 && tr->step % o->eval_every == 0)
                        st = validate(tr, val, &stop, &aborted);
                    if (st != PEFT_OK) break;
                }
            }
            if (st != PEFT_OK) break;
        }
        if (st != PEFT_OK) break;
        if (tr->epoch_pos >= train->n) {
            tr->epoch_pos = 0;
            tr->epoch++;
            if (val && o->eval_every == 0 && !stop && !aborted && (st = validate(tr, val, &stop, &aborted)) != PEFT_OK) break;
        }
    }
    tr->elapsed += peft__now() - tr->t0;
    if (st != PEFT_OK) return st;
    if (tr->stopped_early && o->restore_best && tr->has_best && (st = snapshot(tr, true)) != PEFT_OK) return st;
    out->steps = tr->step;
    out->epochs = tr->epoch;
    out->best_val_loss = tr->best_val;
    out->best_step = tr->best_step;
    out->val_loss_before = tr->val_before;
    out->stopped_early = tr->stopped_early;
    if (val) {
        if ((st = peft_trainer_evaluate(tr, val, &m)) != PEFT_OK) return st;
        out->val_loss_after = m.loss;
        if (isnan(out->best_val_loss) || m.loss < out->best_val_loss) out->best_val_loss = m.loss;
    }
    if (tr->ref) {
        if ((st = peft_trainer_evaluate(tr, tr->ref, &m)) != PEFT_OK) return st;
        out->ref_loss_before = tr->ref_before;
        out->ref_loss_after = m.loss;
        out->forgetting = m.loss - tr->ref_before;
    }
    out->seconds = tr->elapsed;
    if (aborted) return peft__fail(ctx, PEFT_ABORTED, "peft_trainer_fit: stopped by the progress callback at step %lld",
                                   (long long)tr->step);
    return PEFT_OK;
}

peft_status peft_trainer_fit(peft_trainer *tr, const peft_dataset *train, const peft_dataset *val, peft_fit_result *out)
{
    if (!tr) return PEFT_ERR_INVALID_ARG;
    return fit(tr, train, val, tr->o.max_steps > 0 ? INT32_MAX : tr->o.epochs, out);
}

peft_status peft_trainer_epoch(peft_trainer *tr, const peft_dataset *train, const peft_dataset *val, peft_fit_result *out)
{
    if (!tr) return PEFT_ERR_INVALID_ARG;
    return fit(tr, train, val, tr->epoch + 1, out);
}
