/* libpeft — symbol export macro.
 *
 * The library is compiled with -fvisibility=hidden; only declarations marked
 * PEFT_API are exported from the shared object. */
#ifndef PEFT_EXPORT_H
#define PEFT_EXPORT_H

#if defined(_WIN32) || defined(__CYGWIN__)
#  if defined(PEFT_BUILD) && defined(PEFT_SHARED)
#    define PEFT_API __declspec(dllexport)
#  elif defined(PEFT_SHARED)
#    define PEFT_API __declspec(dllimport)
#  else
#    define PEFT_API
#  endif
#elif defined(__GNUC__) || defined(__clang__)
#  define PEFT_API __attribute__((visibility("default")))
#else
#  define PEFT_API
#endif

#endif /* PEFT_EXPORT_H */
