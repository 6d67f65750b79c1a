/*
 * fuzz_config.c - libFuzzer target: arbitrary bytes as a config file.
 *
 * Loading must never crash, hang or leak, whatever the input. When an input
 * loads, its dump must load again to the very same dump (the dump is a valid
 * config that means the same thing), which also exercises the masking and
 * quoting code on every value the fuzzer manages to get through validation.
 *
 *   cmake -S . -B build-fuzz -DAH_FUZZ=ON -DCMAKE_C_COMPILER=clang
 *   cmake --build build-fuzz --target fuzz_config
 *   ./build-fuzz/fuzz_config tests/fuzz/corpus/config -max_total_time=60
 */
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"

/* A fixed environment so runs are reproducible (never the process's own). */
static char *fuzz_env[] = {"HOME=/root", "OPENAI_API_KEY=sk-fuzz",   "EMPTY=",
                           "PORT=8080",  "AGENTHUB_LOG_LEVEL=debug", NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ah_config_t c;
    ah_buf_t errs = AH_BUF_INIT;
    int rc = ah_config_load_string(&c, "fuzz.yaml", (const char *)data, size, fuzz_env, &errs);
    if (rc == 0) {
        ah_buf_t out = AH_BUF_INIT, out2 = AH_BUF_INIT, errs2 = AH_BUF_INIT;
        ah_config_t again;
        if (ah_config_dump(&c, &out) != 0)
            abort();
        if (ah_config_load_string(&again, "dump.yaml", out.data, out.len, fuzz_env, &errs2) != 0)
            abort(); /* the dump of a valid config must be valid */
        if (ah_config_dump(&again, &out2) != 0)
            abort();
        /* Skip the first line, which names the source. */
        const char *b1 = strchr(out.data, '\n'), *b2 = strchr(out2.data, '\n');
        if (!b1 || !b2 || strcmp(b1, b2) != 0)
            abort();
        (void)ah_config_model_find(&c, "mock");
        (void)ah_config_provider_find(&c, "local");
        ah_config_free(&again);
        ah_buf_free(&out);
        ah_buf_free(&out2);
        ah_buf_free(&errs2);
        ah_config_free(&c);
    } else if (errs.len == 0 && rc != -ENOMEM) {
        abort(); /* every failure explains itself */
    }
    ah_buf_free(&errs);
    return 0;
}
