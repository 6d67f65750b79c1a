/*
 * yaml.c - libyaml event stream -> bounded node tree; see yaml.h.
 *
 * The parser is driven event by event (never yaml_parser_load, whose
 * document model expands nothing but also checks nothing): each container
 * being built sits on a stack of frames with a growable child vector, and is
 * copied into the arena when its END event arrives. Everything the caller
 * keeps lives in one arena, so freeing a stream is one call and an alias can
 * simply point at its anchor's node.
 */
#include "core/yaml.h"

#include "core/arena.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

struct ah_yaml_mem {
    ah_arena_t arena;
};

typedef struct anchor {
    const char *name;
    ah_yaml_node_t *node;
    size_t count; /* nodes in its subtree, aliases expanded */
} anchor_t;

typedef struct frame {
    ah_yaml_node_t *node;
    void *vec; /* ah_yaml_pair_t[] for a mapping, ah_yaml_node_t *[] for a sequence */
    size_t n, cap;
    ah_yaml_node_t *key; /* mapping: key waiting for its value */
    int key_line, key_col;
    size_t count;
    char *anchor; /* malloc'd; registered when the container ends */
} frame_t;

typedef struct parse {
    const char *name;
    const char *text;
    size_t len;
    ah_yaml_limits_t lim;
    ah_buf_t *err;
    ah_arena_t *arena;

    frame_t *stack;
    size_t depth;

    anchor_t *anchors;
    size_t n_anchors, cap_anchors;
    size_t n_aliases;
    size_t n_nodes;

    ah_yaml_node_t **docs;
    size_t n_docs, cap_docs;
    ah_yaml_node_t *root;
} parse_t;

static int fail(parse_t *p, int rc, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int fail(parse_t *p, int rc, int line, int col, const char *fmt, ...)
{
    if (!p->err)
        return rc;
    va_list ap;
    va_start(ap, fmt);
    if (line > 0)
        ah_buf_printf(p->err, "%s:%d:%d: ", p->name, line, col);
    else
        ah_buf_printf(p->err, "%s: ", p->name);
    ah_buf_vprintf(p->err, fmt, ap);
    ah_buf_putc(p->err, '\n');
    va_end(ap);
    return rc;
}

static int mark_line(const yaml_mark_t *m)
{
    return m->line >= INT32_MAX ? INT32_MAX : (int)m->line + 1;
}

static int mark_col(const yaml_mark_t *m)
{
    return m->column >= INT32_MAX ? INT32_MAX : (int)m->column + 1;
}

/* Grows a malloc'd vector of elem-sized items to hold one more. */
static int vec_grow(void **vec, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 8;
    if (ncap > SIZE_MAX / elem)
        return -ENOMEM;
    void *nv = realloc(*vec, ncap * elem);
    if (!nv)
        return -ENOMEM;
    *vec = nv;
    *cap = ncap;
    return 0;
}

static int count_node(parse_t *p, size_t add, const yaml_mark_t *m)
{
    if (add > p->lim.max_nodes || p->n_nodes > p->lim.max_nodes - add)
        return fail(p, -E2BIG, mark_line(m), mark_col(m),
                    "document has more than %zu nodes (aliases counted expanded)",
                    p->lim.max_nodes);
    p->n_nodes += add;
    return 0;
}

static ah_yaml_node_t *node_new(parse_t *p, ah_yaml_kind_t kind, const yaml_mark_t *m,
                                const yaml_char_t *tag)
{
    ah_yaml_node_t *nd = ah_arena_calloc(p->arena, sizeof(*nd));
    if (!nd)
        return NULL;
    nd->kind = kind;
    nd->line = mark_line(m);
    nd->col = mark_col(m);
    if (tag) {
        nd->tag = ah_arena_strndup(p->arena, (const char *)tag, strlen((const char *)tag));
        if (!nd->tag)
            return NULL;
    }
    return nd;
}

static int anchor_add(parse_t *p, const char *name, ah_yaml_node_t *nd, size_t count)
{
    if (vec_grow((void **)&p->anchors, &p->cap_anchors, p->n_anchors, sizeof(anchor_t)))
        return -ENOMEM;
    char *copy = ah_arena_strndup(p->arena, name, strlen(name));
    if (!copy)
        return -ENOMEM;
    p->anchors[p->n_anchors++] = (anchor_t){copy, nd, count};
    return 0;
}

static const anchor_t *anchor_find(const parse_t *p, const char *name)
{
    /* Newest first: YAML lets a later anchor reuse a name. */
    for (size_t i = p->n_anchors; i-- > 0;)
        if (strcmp(p->anchors[i].name, name) == 0)
            return &p->anchors[i];
    return NULL;
}

/* Hands a finished node (of count nodes) to its parent or makes it the root. */
static int attach(parse_t *p, ah_yaml_node_t *nd, size_t count, int line, int col)
{
    if (p->depth == 0) {
        p->root = nd;
        return 0;
    }
    frame_t *f = &p->stack[p->depth - 1];
    f->count += count;
    if (f->node->kind == AH_YAML_SEQ) {
        if (vec_grow(&f->vec, &f->cap, f->n, sizeof(ah_yaml_node_t *)))
            return -ENOMEM;
        ((ah_yaml_node_t **)f->vec)[f->n++] = nd;
        return 0;
    }
    if (!f->key) {
        if (nd->kind != AH_YAML_SCALAR)
            return fail(p, -EINVAL, line, col, "mapping keys must be plain strings, not a %s",
                        ah_yaml_kind_name(nd->kind));
        f->key = nd;
        f->key_line = line;
        f->key_col = col;
        return 0;
    }
    if (vec_grow(&f->vec, &f->cap, f->n, sizeof(ah_yaml_pair_t)))
        return -ENOMEM;
    ((ah_yaml_pair_t *)f->vec)[f->n++] =
        (ah_yaml_pair_t){f->key->str, f->key->len, f->key_line, f->key_col, nd};
    f->key = NULL;
    return 0;
}

static int push(parse_t *p, ah_yaml_kind_t kind, const yaml_event_t *ev, const yaml_char_t *anchor,
                const yaml_char_t *tag)
{
    if (p->depth >= (size_t)p->lim.max_depth)
        return fail(p, -E2BIG, mark_line(&ev->start_mark), mark_col(&ev->start_mark),
                    "nesting deeper than %d levels", p->lim.max_depth);
    int rc = count_node(p, 1, &ev->start_mark);
    if (rc)
        return rc;
    ah_yaml_node_t *nd = node_new(p, kind, &ev->start_mark, tag);
    if (!nd)
        return -ENOMEM;
    frame_t *f = &p->stack[p->depth];
    memset(f, 0, sizeof(*f));
    f->node = nd;
    f->count = 1;
    if (anchor) {
        f->anchor = strdup((const char *)anchor);
        if (!f->anchor)
            return -ENOMEM;
    }
    p->depth++;
    return 0;
}

static int cmp_pair_ptr(const void *a, const void *b)
{
    const ah_yaml_pair_t *x = *(const ah_yaml_pair_t *const *)a;
    const ah_yaml_pair_t *y = *(const ah_yaml_pair_t *const *)b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);
    if (c)
        return c;
    if (x->key_len != y->key_len)
        return x->key_len < y->key_len ? -1 : 1;
    /* Same key: file order, so the later one is reported. */
    return x < y ? -1 : (x > y ? 1 : 0);
}

/* Sorting pointers keeps this O(n log n) where a pairwise check could be made quadratic. */
static int check_duplicate_keys(parse_t *p, ah_yaml_pair_t *pairs, size_t n)
{
    if (n < 2)
        return 0;
    ah_yaml_pair_t **idx = malloc(n * sizeof(*idx));
    if (!idx)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        idx[i] = &pairs[i];
    qsort(idx, n, sizeof(*idx), cmp_pair_ptr);
    int rc = 0;
    for (size_t i = 1; i < n; i++) {
        if (idx[i]->key_len == idx[i - 1]->key_len &&
            memcmp(idx[i]->key, idx[i - 1]->key, idx[i]->key_len) == 0) {
            rc = fail(p, -EINVAL, idx[i]->key_line, idx[i]->key_col,
                      "duplicate key \"%s\" (first at line %d; keep one)", idx[i]->key,
                      idx[i - 1]->key_line);
            break;
        }
    }
    free(idx);
    return rc;
}

static int pop(parse_t *p)
{
    frame_t *f = &p->stack[p->depth - 1];
    ah_yaml_node_t *nd = f->node;
    size_t elem = nd->kind == AH_YAML_MAP ? sizeof(ah_yaml_pair_t) : sizeof(ah_yaml_node_t *);
    if (f->n) {
        void *copy = ah_arena_alloc(p->arena, f->n * elem);
        if (!copy)
            return -ENOMEM;
        memcpy(copy, f->vec, f->n * elem);
        if (nd->kind == AH_YAML_MAP)
            nd->pairs = copy;
        else
            nd->items = copy;
    }
    nd->n = f->n;
    free(f->vec);
    f->vec = NULL;
    size_t count = f->count;
    char *anchor = f->anchor;
    f->anchor = NULL;
    p->depth--;
    int rc = 0;
    if (nd->kind == AH_YAML_MAP)
        rc = check_duplicate_keys(p, nd->pairs, nd->n);
    if (!rc && anchor)
        rc = anchor_add(p, anchor, nd, count);
    free(anchor);
    if (!rc)
        rc = attach(p, nd, count, nd->line, nd->col);
    return rc;
}

static int on_scalar(parse_t *p, const yaml_event_t *ev)
{
    int rc = count_node(p, 1, &ev->start_mark);
    if (rc)
        return rc;
    ah_yaml_node_t *nd = node_new(p, AH_YAML_SCALAR, &ev->start_mark, ev->data.scalar.tag);
    if (!nd)
        return -ENOMEM;
    nd->len = ev->data.scalar.length;
    nd->str = ah_arena_strndup(p->arena, (const char *)ev->data.scalar.value, nd->len);
    if (!nd->str)
        return -ENOMEM;
    nd->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE ||
                 (nd->tag && strcmp(nd->tag, "tag:yaml.org,2002:str") == 0);
    if (ev->data.scalar.anchor) {
        rc = anchor_add(p, (const char *)ev->data.scalar.anchor, nd, 1);
        if (rc)
            return rc;
    }
    return attach(p, nd, 1, nd->line, nd->col);
}

static int on_alias(parse_t *p, const yaml_event_t *ev)
{
    const char *name = (const char *)ev->data.alias.anchor;
    int line = mark_line(&ev->start_mark), col = mark_col(&ev->start_mark);
    if (++p->n_aliases > p->lim.max_aliases)
        return fail(p, -E2BIG, line, col,
                    "more than %zu aliases (*%s); aliases are capped to stop expansion attacks",
                    p->lim.max_aliases, name);
    const anchor_t *a = anchor_find(p, name);
    if (!a)
        return fail(p, -EINVAL, line, col,
                    "unknown alias *%s (define &%s on a complete node before using it)", name,
                    name);
    int rc = count_node(p, a->count, &ev->start_mark);
    if (rc)
        return rc;
    return attach(p, a->node, a->count, line, col);
}

static int on_document_end(parse_t *p, const yaml_event_t *ev)
{
    if (!p->root)
        return 0;
    if (vec_grow((void **)&p->docs, &p->cap_docs, p->n_docs, sizeof(*p->docs)))
        return -ENOMEM;
    p->docs[p->n_docs++] = p->root;
    p->root = NULL;
    /* Anchors do not cross documents. */
    p->n_anchors = 0;
    (void)ev;
    return 0;
}

/* Position of byte offset off in the input, for reader errors that carry no mark. */
static void offset_pos(const parse_t *p, size_t off, int *line, int *col)
{
    int l = 1, c = 1;
    for (size_t i = 0; i < off && i < p->len; i++) {
        if (p->text[i] == '\n') {
            l++;
            c = 1;
        } else if (l < INT32_MAX && c < INT32_MAX) {
            c++;
        }
    }
    *line = l;
    *col = c;
}

static int parser_error(parse_t *p, const yaml_parser_t *ps)
{
    if (ps->error == YAML_MEMORY_ERROR)
        return -ENOMEM;
    const char *problem = ps->problem ? ps->problem : "invalid YAML";
    if (ps->error == YAML_READER_ERROR) {
        int line, col;
        offset_pos(p, ps->problem_offset, &line, &col);
        return fail(p, -EINVAL, line, col, "%s (the file must be UTF-8 text)", problem);
    }
    size_t at_byte = ps->problem_mark.index;
    if (at_byte < p->len && p->text[at_byte] == '\t')
        return fail(p, -EINVAL, mark_line(&ps->problem_mark), mark_col(&ps->problem_mark),
                    "%s: a tab (YAML indents with spaces, not tabs)", problem);
    if (ps->context)
        return fail(p, -EINVAL, mark_line(&ps->problem_mark), mark_col(&ps->problem_mark),
                    "%s (%s at line %d)", problem, ps->context, mark_line(&ps->context_mark));
    return fail(p, -EINVAL, mark_line(&ps->problem_mark), mark_col(&ps->problem_mark), "%s",
                problem);
}

static int run(parse_t *p)
{
    yaml_parser_t ps;
    if (!yaml_parser_initialize(&ps))
        return -ENOMEM;
    yaml_parser_set_input_string(&ps, (const unsigned char *)p->text, p->len);
    int rc = 0;
    bool done = false;
    while (!done && !rc) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&ps, &ev)) {
            rc = parser_error(p, &ps);
            break;
        }
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (p->n_docs >= p->lim.max_docs)
                rc = fail(p, -E2BIG, mark_line(&ev.start_mark), mark_col(&ev.start_mark),
                          "more than %zu documents", p->lim.max_docs);
            break;
        case YAML_DOCUMENT_END_EVENT:
            rc = on_document_end(p, &ev);
            break;
        case YAML_ALIAS_EVENT:
            rc = on_alias(p, &ev);
            break;
        case YAML_SCALAR_EVENT:
            rc = on_scalar(p, &ev);
            break;
        case YAML_SEQUENCE_START_EVENT:
            rc = push(p, AH_YAML_SEQ, &ev, ev.data.sequence_start.anchor,
                      ev.data.sequence_start.tag);
            break;
        case YAML_MAPPING_START_EVENT:
            rc = push(p, AH_YAML_MAP, &ev, ev.data.mapping_start.anchor, ev.data.mapping_start.tag);
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            rc = pop(p);
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&ps);
    if (rc == -ENOMEM)
        fail(p, rc, 0, 0, "out of memory while parsing");
    return rc;
}

static void limits_fill(ah_yaml_limits_t *out, const ah_yaml_limits_t *in)
{
    ah_yaml_limits_t d = {AH_YAML_MAX_BYTES, AH_YAML_MAX_DEPTH, AH_YAML_MAX_NODES,
                          AH_YAML_MAX_ALIASES, AH_YAML_MAX_DOCS};
    if (in) {
        if (in->max_bytes)
            d.max_bytes = in->max_bytes;
        if (in->max_depth > 0)
            d.max_depth = in->max_depth;
        if (in->max_nodes)
            d.max_nodes = in->max_nodes;
        if (in->max_aliases)
            d.max_aliases = in->max_aliases;
        if (in->max_docs)
            d.max_docs = in->max_docs;
    }
    *out = d;
}

int ah_yaml_load_string(ah_yaml_t *y, const char *name, const char *text, size_t len,
                        const ah_yaml_limits_t *lim, ah_buf_t *err)
{
    *y = (ah_yaml_t)AH_YAML_INIT;
    parse_t p = {0};
    p.name = name ? name : "<yaml>";
    p.text = text ? text : "";
    p.len = text ? len : 0;
    p.err = err;
    limits_fill(&p.lim, lim);
    if (p.len > p.lim.max_bytes)
        return fail(&p, -E2BIG, 0, 0, "larger than %zu bytes (%zu bytes given)", p.lim.max_bytes,
                    p.len);

    struct ah_yaml_mem *mem = calloc(1, sizeof(*mem));
    char *name_copy = strdup(p.name);
    p.stack = calloc((size_t)p.lim.max_depth, sizeof(frame_t));
    if (!mem || !name_copy || !p.stack) {
        free(mem);
        free(name_copy);
        free(p.stack);
        return fail(&p, -ENOMEM, 0, 0, "out of memory");
    }
    /* Strings and nodes are bounded by the input size and max_nodes, so the
     * arena cap is only a backstop against a bug in this file. */
    ah_arena_init(&mem->arena, 16384, 0);
    p.arena = &mem->arena;

    int rc = run(&p);

    while (p.depth > 0) {
        frame_t *f = &p.stack[--p.depth];
        free(f->vec);
        free(f->anchor);
    }
    free(p.stack);
    free(p.anchors);
    if (rc) {
        free(p.docs);
        ah_arena_free(&mem->arena);
        free(mem);
        free(name_copy);
        return rc;
    }
    y->name = name_copy;
    y->docs = p.docs;
    y->n_docs = p.n_docs;
    y->mem = mem;
    return 0;
}

int ah_yaml_load_file(ah_yaml_t *y, const char *path, const ah_yaml_limits_t *lim, ah_buf_t *err)
{
    *y = (ah_yaml_t)AH_YAML_INIT;
    ah_yaml_limits_t l;
    limits_fill(&l, lim);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (err)
            ah_buf_printf(err, "%s: cannot read: %s\n", path, strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        if (err)
            ah_buf_printf(err, "%s: cannot read: %s\n", path, strerror(EISDIR));
        return -EISDIR;
    }
    ah_buf_t data;
    ah_buf_init(&data, 0);
    int rc = 0;
    for (;;) {
        /* Read one byte past the cap so an over-size file is detected, not cut. */
        if (ah_buf_reserve(&data, 65536)) {
            rc = -ENOMEM;
            break;
        }
        size_t room = data.cap - data.len - 1;
        ssize_t n = read(fd, data.data + data.len, room);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        if (n == 0)
            break;
        data.len += (size_t)n;
        if (data.len > l.max_bytes)
            break;
    }
    close(fd);
    if (rc) {
        if (err)
            ah_buf_printf(err, "%s: cannot read: %s\n", path, strerror(-rc));
        ah_buf_free(&data);
        return rc;
    }
    if (data.len > l.max_bytes) {
        if (err)
            ah_buf_printf(err, "%s: larger than %zu bytes\n", path, l.max_bytes);
        ah_buf_free(&data);
        return -E2BIG;
    }
    rc = ah_yaml_load_string(y, path, data.data ? data.data : "", data.len, &l, err);
    ah_buf_free(&data);
    return rc;
}

void ah_yaml_free(ah_yaml_t *y)
{
    if (y->mem) {
        ah_arena_free(&y->mem->arena);
        free(y->mem);
    }
    free(y->docs);
    free(y->name);
    *y = (ah_yaml_t)AH_YAML_INIT;
}

const ah_yaml_node_t *ah_yaml_root(const ah_yaml_t *y)
{
    return y->n_docs ? y->docs[0] : NULL;
}

const ah_yaml_pair_t *ah_yaml_map_pair(const ah_yaml_node_t *map, const char *key)
{
    if (!map || map->kind != AH_YAML_MAP)
        return NULL;
    size_t klen = strlen(key);
    for (size_t i = 0; i < map->n; i++)
        if (map->pairs[i].key_len == klen && memcmp(map->pairs[i].key, key, klen) == 0)
            return &map->pairs[i];
    return NULL;
}

const ah_yaml_node_t *ah_yaml_map_get(const ah_yaml_node_t *map, const char *key)
{
    const ah_yaml_pair_t *pr = ah_yaml_map_pair(map, key);
    return pr ? pr->value : NULL;
}

bool ah_yaml_is_null(const ah_yaml_node_t *node)
{
    if (!node)
        return true;
    if (node->kind != AH_YAML_SCALAR || node->quoted)
        return false;
    if (node->tag && strcmp(node->tag, "tag:yaml.org,2002:null") != 0)
        return false;
    const char *s = node->str;
    return node->len == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
           strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

const char *ah_yaml_kind_name(ah_yaml_kind_t kind)
{
    switch (kind) {
    case AH_YAML_MAP:
        return "mapping";
    case AH_YAML_SEQ:
        return "sequence";
    case AH_YAML_SCALAR:
        return "scalar";
    }
    return "node";
}
