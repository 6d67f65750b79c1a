/*
 * fuzz_agent_spec.c - libFuzzer target: arbitrary bytes as an agent document,
 * read as YAML, as JSON and sniffed.
 *
 * Parsing must never crash, hang or leak, and every failure must explain
 * itself (at least one error). When a document parses, its canonical JSON
 * must parse again to the very same JSON and hash, and its YAML print
 * (`agents get --yaml`) must parse back to the same spec too.
 *
 *   cmake -S . -B build-fuzz -DAH_FUZZ=ON -DCMAKE_C_COMPILER=clang
 *   cmake --build build-fuzz --target fuzz_agent_spec
 *   ./build-fuzz/fuzz_agent_spec tests/fuzz/corpus/agent_spec -max_total_time=60
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agents/spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The spec parsed from text must be exactly s again. */
static void check_same(const ah_agent_spec_t *s, const char *text, size_t len,
                       ah_agent_format_t fmt)
{
    ah_agent_spec_list_t l;
    ah_agent_errors_t e = AH_AGENT_ERRORS_INIT;
    if (ah_agent_spec_parse("again", text, len, fmt, &l, &e) != 0 || l.n != 1)
        abort();
    if (strcmp(l.v[0]->json, s->json) != 0 || strcmp(l.v[0]->hash, s->hash) != 0)
        abort();
    ah_agent_spec_list_free(&l);
    ah_agent_errors_free(&e);
}

static void one(const uint8_t *data, size_t size, ah_agent_format_t fmt)
{
    ah_agent_spec_list_t l;
    ah_agent_errors_t e = AH_AGENT_ERRORS_INIT;
    int rc = ah_agent_spec_parse("fuzz", (const char *)data, size, fmt, &l, &e);
    if (rc == 0) {
        for (size_t i = 0; i < l.n; i++) {
            const ah_agent_spec_t *s = l.v[i];
            if (!s->name || !s->model || !s->json || strlen(s->hash) != 64)
                abort();
            check_same(s, s->json, s->json_len, AH_AGENT_FMT_JSON);
            ah_buf_t y = AH_BUF_INIT;
            if (ah_agent_json_to_yaml(s->json, s->json_len, &y) != 0)
                abort();
            check_same(s, y.data, y.len, AH_AGENT_FMT_YAML);
            ah_buf_free(&y);
            for (size_t t = 0; t < s->n_tools; t++)
                if (s->tools[t].name)
                    (void)ah_agent_spec_tool(s, s->tools[t].name);
        }
    } else if (e.n == 0 && e.more == 0 && rc != -ENOMEM) {
        abort(); /* every failure explains itself */
    }
    ah_buf_t b = AH_BUF_INIT;
    ah_agent_errors_format(&e, &b);
    ah_buf_free(&b);
    ah_agent_spec_list_free(&l);
    ah_agent_errors_free(&e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one(data, size, AH_AGENT_FMT_YAML);
    one(data, size, AH_AGENT_FMT_JSON);
    one(data, size, AH_AGENT_FMT_AUTO);
    return 0;
}
