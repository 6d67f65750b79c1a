/*
 * yaml.h - a small, bounded YAML document tree on top of libyaml.
 *
 * ah_yaml_load_string/ah_yaml_load_file parse a YAML stream (one or more
 * documents separated by `---`) into a read-only tree of nodes: mappings,
 * sequences and scalars. Every node carries its 1-based line and column so
 * callers can report "FILE:LINE: ..." errors; mappings keep their keys in
 * file order with each key's own position; scalars remember whether they
 * were written plain (so `"123"`, `'null'` and `|` blocks are strings, not
 * numbers or nulls: the caller decides what plain text means).
 *
 * Input is hostile until parsed: the text size, nesting depth, number of
 * nodes, number of documents and number of aliases are all capped
 * (ah_yaml_limits_t). An alias is the very node its anchor names (the tree
 * is a DAG, never a cycle), and each alias counts the size of what it points
 * to against max_nodes, so a "billion laughs" document fails fast with a
 * clear message instead of exhausting memory or CPU for whoever walks it.
 *
 * Mapping keys must be scalars and unique within their mapping.
 *
 * Errors are appended to the caller's buffer as "NAME:LINE:COL: message".
 * All memory belongs to the ah_yaml_t; free it with ah_yaml_free. Nothing
 * here uses global state; one ah_yaml_t is used by one thread at a time.
 */
#ifndef AH_YAML_H
#define AH_YAML_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

#define AH_YAML_MAX_BYTES   (1024 * 1024) /* default input size cap: 1 MiB */
#define AH_YAML_MAX_DEPTH   64            /* default nesting cap */
#define AH_YAML_MAX_NODES   200000        /* default node cap, aliases expanded */
#define AH_YAML_MAX_ALIASES 64            /* default alias (*name) cap per stream */
#define AH_YAML_MAX_DOCS    1000          /* default document cap per stream */

typedef enum { AH_YAML_SCALAR = 1, AH_YAML_MAP, AH_YAML_SEQ } ah_yaml_kind_t;

typedef struct ah_yaml_node ah_yaml_node_t;

/** One key: value entry of a mapping. */
typedef struct ah_yaml_pair {
    const char *key; /* NUL-terminated scalar text of the key */
    size_t key_len;  /* may differ from strlen(key) if the key holds "\0" */
    int key_line;    /* 1-based position of the key */
    int key_col;
    ah_yaml_node_t *value; /* never NULL: `key:` alone is an empty plain scalar */
} ah_yaml_pair_t;

struct ah_yaml_node {
    ah_yaml_kind_t kind;
    int line; /* 1-based position where the node starts */
    int col;
    const char *tag; /* explicit tag (`!!str` is "tag:yaml.org,2002:str"), else NULL */

    /* AH_YAML_SCALAR */
    const char *str; /* NUL-terminated text; "" for an empty value */
    size_t len;      /* length of str; a double-quoted "\0" makes it > strlen(str) */
    bool quoted;     /* not plain: quoted, block (| >) or tagged !!str */

    /* AH_YAML_MAP: pairs[0..n); AH_YAML_SEQ: items[0..n) */
    size_t n;
    ah_yaml_pair_t *pairs;
    ah_yaml_node_t **items;
};

/** Caps applied while parsing; a zero field means "use the default" above. */
typedef struct ah_yaml_limits {
    size_t max_bytes;
    int max_depth;
    size_t max_nodes;
    size_t max_aliases;
    size_t max_docs;
} ah_yaml_limits_t;

struct ah_yaml_mem; /* private */

/** A parsed stream: docs[i] is the root of document i (never NULL). */
typedef struct ah_yaml {
    char *name; /* copy of the name given at load, used in messages */
    ah_yaml_node_t **docs;
    size_t n_docs; /* 0 for an empty or comment-only input */
    struct ah_yaml_mem *mem;
} ah_yaml_t;

#define AH_YAML_INIT                                                                               \
    {                                                                                              \
        NULL, NULL, 0, NULL                                                                        \
    }

/**
 * Parses len bytes of text (need not be NUL-terminated) as a YAML stream.
 * name is what messages call the input (a file name, "<request>" ...).
 * lim may be NULL for the defaults.
 *
 * Returns 0 and fills y, or a negative errno and appends one line
 * "NAME:LINE:COL: message" to err (err may be NULL), y being left empty:
 *   -EINVAL  syntax error, non-scalar or duplicate key, unknown alias;
 *   -E2BIG   a limit was exceeded (size, depth, nodes, aliases, documents);
 *   -ENOMEM  out of memory.
 * y must be empty (AH_YAML_INIT or freed) on entry.
 */
int ah_yaml_load_string(ah_yaml_t *y, const char *name, const char *text, size_t len,
                        const ah_yaml_limits_t *lim, ah_buf_t *err);

/**
 * Reads the file at path (at most lim->max_bytes) and parses it like
 * ah_yaml_load_string, messages naming path. Besides the errors above:
 * -errno from open/read (-ENOENT, -EACCES, -EISDIR ...) with
 * "PATH: cannot read: reason" in err.
 */
int ah_yaml_load_file(ah_yaml_t *y, const char *path, const ah_yaml_limits_t *lim, ah_buf_t *err);

/** Frees everything y owns; y is empty (AH_YAML_INIT) afterwards. */
void ah_yaml_free(ah_yaml_t *y);

/** The first document's root, or NULL when the stream has no document. */
const ah_yaml_node_t *ah_yaml_root(const ah_yaml_t *y);

/** The pair whose key is key in mapping map, or NULL (also when map is not a mapping). */
const ah_yaml_pair_t *ah_yaml_map_pair(const ah_yaml_node_t *map, const char *key);

/** The value of key in mapping map, or NULL. */
const ah_yaml_node_t *ah_yaml_map_get(const ah_yaml_node_t *map, const char *key);

/**
 * True when node is NULL or a plain scalar meaning null in YAML 1.2's core
 * schema: empty, "~", "null", "Null" or "NULL".
 */
bool ah_yaml_is_null(const ah_yaml_node_t *node);

/** "mapping", "sequence" or "scalar": for messages like "expected a mapping, got a sequence". */
const char *ah_yaml_kind_name(ah_yaml_kind_t kind);

#endif
