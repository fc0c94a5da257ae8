/* libpeft — version. The Makefile reads the three numbers below: one source of truth. */
#ifndef PEFT_VERSION_H
#define PEFT_VERSION_H

#include "export.h"

#define PEFT_VERSION_MAJOR 0
#define PEFT_VERSION_MINOR 1
#define PEFT_VERSION_PATCH 0

#define PEFT_VERSION_NUMBER (PEFT_VERSION_MAJOR * 10000 + PEFT_VERSION_MINOR * 100 + PEFT_VERSION_PATCH)
#define PEFT__STR2(x) #x
#define PEFT__STR(x) PEFT__STR2(x)
#define PEFT_VERSION_STRING \
    PEFT__STR(PEFT_VERSION_MAJOR) "." PEFT__STR(PEFT_VERSION_MINOR) "." PEFT__STR(PEFT_VERSION_PATCH)

#ifdef __cplusplus
extern "C" {
#endif

/* Version of the library actually linked; compare with PEFT_VERSION_NUMBER at startup. */
PEFT_API int peft_version_number(void);
PEFT_API const char *peft_version_string(void);
/* 1 when the library was built with the MPI backend (make MPI=1), else 0. */
PEFT_API int peft_has_mpi(void);

#ifdef __cplusplus
}
#endif
#endif /* PEFT_VERSION_H */
