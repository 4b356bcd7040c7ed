/* A minimal test harness for the C unit tests: CHECK records failures, RUN runs a test
 * function, and the main returns non-zero if anything failed (CTest reads the exit status). */
#ifndef AP_TEST_H
#define AP_TEST_H

#include <stdio.h>
#include <string.h>

static int ap_test_failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            ap_test_failures++;                                                                    \
        }                                                                                          \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                                     \
            fprintf(stderr, "%s:%d: \"%s\" != \"%s\"\n", __FILE__, __LINE__, a_ ? a_ : "(null)",   \
                    b_ ? b_ : "(null)");                                                           \
            ap_test_failures++;                                                                    \
        }                                                                                          \
    } while (0)

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        int before_ = ap_test_failures;                                                            \
        fn();                                                                                      \
        fprintf(stderr, "%s %s\n", ap_test_failures == before_ ? "ok  " : "FAIL", #fn);            \
    } while (0)

#define TEST_MAIN_END() return ap_test_failures ? 1 : 0

#endif
