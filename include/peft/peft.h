/* libpeft — fine-tuning transformer language models on the CPU.
 * This header includes the whole public API. */
#ifndef PEFT_PEFT_H
#define PEFT_PEFT_H

#include "export.h"
#include "version.h"
#include "core.h"
#include "tensor.h"
#include "autograd.h"
#include "ops.h"
#include "model.h"
#include "io.h"
#include "tokenizer.h"
#include "gguf.h"
#include "llama2c.h"
#include "strategy.h"
#include "train.h"
#include "optim.h"

#endif /* PEFT_PEFT_H */
