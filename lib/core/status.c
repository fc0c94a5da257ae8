/* Status strings and version queries. */
#include "../internal.h"

const char *peft_status_str(peft_status status)
{
    switch (status) {
#define PEFT__STATUS_TEXT(name, value, text) \
    case name:                               \
        return text;
        PEFT_STATUS_MAP(PEFT__STATUS_TEXT)
#undef PEFT__STATUS_TEXT
    default:
        return "unknown status";
    }
}

const char *peft_status_name(peft_status status)
{
    switch (status) {
#define PEFT__STATUS_NAME(name, value, text) \
    case name:                               \
        return #name;
        PEFT_STATUS_MAP(PEFT__STATUS_NAME)
#undef PEFT__STATUS_NAME
    default:
        return "PEFT_STATUS_UNKNOWN";
    }
}

int peft_version_number(void) { return PEFT_VERSION_NUMBER; }
const char *peft_version_string(void) { return PEFT_VERSION_STRING; }

int peft_has_mpi(void)
{
#ifdef PEFT_WITH_MPI
    return 1;
#else
    return 0;
#endif
}
