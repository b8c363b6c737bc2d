/* Formula graphs: hash-consed nodes (one node per distinct sub-expression) with their
 * dimensions checked by the op table, named variables, copying and canonical printing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct kred__graph *kred__graph_new(void)
{
	struct kred__graph *g = kred__calloc(1, sizeof(*g));

	if (!g)
		return NULL;
	g->n_buckets = 256;
	g->buckets = kred__calloc(g->n_buckets, sizeof(*g->buckets));
	if (!g->buckets) {
		kred__free(g);
		return NULL;
	}
	return g;
}

void kred__graph_free(struct kred__graph *g)
{
	if (!g)
		return;
	for (int k = 0; k < g->n_nodes; k++)
		kred__free(g->nodes[k]);
	for (int k = 0; k < g->n_vars; k++)
		kred__free(g->vars[k].name);
	kred__free(g->vars);
	kred__free(g->nodes);
	kred__free(g->buckets);
	kred__free(g);
}

static uint64_t mix(uint64_t h, uint64_t v)
{
	h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
	return h * 0xff51afd7ed558ccdull;
}

static uint64_t node_hash(const struct kred__node *n)
{
	uint64_t h = mix(0x12345, (uint64_t)n->op), bits;

	for (int k = 0; k < n->nargs; k++)
		h = mix(h, (uint64_t)n->arg[k]->id);
	for (int k = 0; k < n->nint; k++)
		h = mix(h, (uint64_t)(uint32_t)n->ints[k]);
	memcpy(&bits, &n->value, sizeof(bits));
	h = mix(h, bits);
	/* The buckets take the low bits, and a multiplication leaves them depending on low
	 * bits only: constants such as 1.0, 2.0... differ in high bits alone, and without
	 * this finaliser (MurmurHash3's) they all fell into a few buckets, which made
	 * building a formula of n distinct constants quadratic. */
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	return h ^ (h >> 33);
}

static int node_equal(const struct kred__node *a, const struct kred__node *b)
{
	if (a->op != b->op || a->nargs != b->nargs || a->nint != b->nint)
		return 0;
	for (int k = 0; k < a->nargs; k++)
		if (a->arg[k] != b->arg[k])
			return 0;
	if (a->nint && memcmp(a->ints, b->ints, sizeof(int) * (size_t)a->nint))
		return 0;
	/* Bitwise, so that 0 and -0 (and NaN payloads) stay distinct constants. */
	return !memcmp(&a->value, &b->value, sizeof(double));
}

static int grow(struct kred__graph *g)
{
	if (g->n_nodes == g->cap_nodes) {
		int cap = g->cap_nodes ? 2 * g->cap_nodes : 64;
		struct kred__node **p = kred__realloc(g->nodes, sizeof(*p) * (size_t)cap);

		if (!p)
			return -1;
		g->nodes = p;
		g->cap_nodes = cap;
	}
	if ((size_t)g->n_nodes >= 2 * g->n_buckets) {
		size_t nb = 4 * g->n_buckets;
		struct kred__node **b = kred__calloc(nb, sizeof(*b));

		if (!b)
			return -1;
		for (int k = 0; k < g->n_nodes; k++) {
			struct kred__node *n = g->nodes[k];

			n->chain = b[n->hash % nb];
			b[n->hash % nb] = n;
		}
		kred__free(g->buckets);
		g->buckets = b;
		g->n_buckets = nb;
	}
	return 0;
}

const struct kred__node *kred__node(struct kred__graph *g, enum kred__op op, int nargs,
				    const struct kred__node *const *args, int nint,
				    const int *ints, double value, struct kred__error *err)
{
	struct kred__node key, *n;
	int dim, height = 1;

	if (nargs > KRED__MAX_ARGS || nint > KRED__MAX_INTS) {
		kred__fail(err, KRED_ERANGE, -1, "too many arguments to %s", kred__ops[op].name);
		return NULL;
	}
	memset(&key, 0, sizeof(key));
	key.op = op;
	key.nargs = nargs;
	key.nint = nint;
	for (int k = 0; k < nargs; k++) {
		if (!args[k])
			return NULL; /* an argument failed: its error is already in err */
		key.arg[k] = args[k];
		if (args[k]->height >= height)
			height = args[k]->height + 1;
	}
	if (nint)
		memcpy(key.ints, ints, sizeof(int) * (size_t)nint);
	key.value = value;
	key.hash = node_hash(&key);
	for (n = g->buckets[key.hash % g->n_buckets]; n; n = n->chain)
		if (n->hash == key.hash && node_equal(n, &key))
			return n;
	if (height > KRED__MAX_HEIGHT) {
		kred__fail(err, KRED_EDEPTH, -1,
			   "formula too deep: a chain of more than %d nested operations",
			   KRED__MAX_HEIGHT);
		return NULL;
	}
	dim = kred__ops[op].dim(&key, err);
	if (dim < 0)
		return NULL;
	key.dim = dim;
	key.height = height;
	if (grow(g) || !(n = kred__malloc(sizeof(*n)))) {
		kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		return NULL;
	}
	*n = key;
	n->id = g->n_nodes;
	g->nodes[g->n_nodes++] = n;
	n->chain = g->buckets[n->hash % g->n_buckets];
	g->buckets[n->hash % g->n_buckets] = n;
	return n;
}

const struct kred__node *kred__cst(struct kred__graph *g, double v, struct kred__error *err)
{
	return kred__node(g, KRED__OP_CST, 0, NULL, 0, NULL, v, err);
}

const struct kred__node *kred__var_node(struct kred__graph *g, int pos, int dim, int cat,
					struct kred__error *err)
{
	int ints[3] = { pos, dim, cat };

	return kred__node(g, KRED__OP_VAR, 0, NULL, 3, ints, 0, err);
}

const struct kred__node *kred__op1(struct kred__graph *g, enum kred__op op,
				   const struct kred__node *a, struct kred__error *err)
{
	return kred__node(g, op, 1, &a, 0, NULL, 0, err);
}

const struct kred__node *kred__op2(struct kred__graph *g, enum kred__op op,
				   const struct kred__node *a, const struct kred__node *b,
				   struct kred__error *err)
{
	const struct kred__node *args[2] = { a, b };

	return kred__node(g, op, 2, args, 0, NULL, 0, err);
}

const struct kred__node *kred__op3(struct kred__graph *g, enum kred__op op,
				   const struct kred__node *a, const struct kred__node *b,
				   const struct kred__node *c, struct kred__error *err)
{
	const struct kred__node *args[3] = { a, b, c };

	return kred__node(g, op, 3, args, 0, NULL, 0, err);
}

const struct kred__node *kred__opi(struct kred__graph *g, enum kred__op op, int nargs,
				   const struct kred__node *const *args, int nint,
				   const int *ints, struct kred__error *err)
{
	return kred__node(g, op, nargs, args, nint, ints, 0, err);
}

const struct kred__var *kred__graph_find(const struct kred__graph *g, const char *name,
					 size_t len)
{
	for (int k = 0; k < g->n_vars; k++)
		if (strlen(g->vars[k].name) == len && !memcmp(g->vars[k].name, name, len))
			return &g->vars[k];
	return NULL;
}

static const char *const cat_names[] = { "Vi", "Vj", "Pm" };

kred_status kred__graph_declare(struct kred__graph *g, const char *name, size_t len, int pos,
				int dim, int cat, struct kred__error *err)
{
	struct kred__var *v;

	if (kred__graph_find(g, name, len))
		return kred__fail(err, KRED_EALIAS, -1, "'%.*s' is declared twice", (int)len,
				  name);
	for (int k = 0; k < g->n_vars; k++) {
		v = &g->vars[k];
		if (v->pos == pos && (v->dim != dim || v->cat != cat))
			return kred__fail(err, KRED_EALIAS, -1,
					  "'%.*s' = %s(%d,%d) conflicts with '%s' = %s(%d,%d) "
					  "at the same position",
					  (int)len, name, cat_names[cat], pos, dim, v->name,
					  cat_names[v->cat], v->pos, v->dim);
	}
	v = kred__realloc(g->vars, sizeof(*v) * (size_t)(g->n_vars + 1));
	if (!v)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	g->vars = v;
	v = &g->vars[g->n_vars];
	v->name = kred__strndup(name, len);
	if (!v->name)
		return kred__fail(err, KRED_ENOMEM, -1, "out of memory");
	v->pos = pos;
	v->dim = dim;
	v->cat = cat;
	g->n_vars++;
	return KRED_OK;
}

kred_status kred__graph_copy_vars(struct kred__graph *dst, const struct kred__graph *src,
				  struct kred__error *err)
{
	return kred__graph_copy_vars_recat(dst, src, NULL, 0, err);
}

kred_status kred__graph_copy_vars_recat(struct kred__graph *dst, const struct kred__graph *src,
					const int *cat, int n_cat, struct kred__error *err)
{
	for (int k = 0; k < src->n_vars; k++) {
		const struct kred__var *v = &src->vars[k];
		int c = cat && v->pos < n_cat && cat[v->pos] >= 0 ? cat[v->pos] : v->cat;
		kred_status s = kred__graph_declare(dst, v->name, strlen(v->name), v->pos,
						    v->dim, c, err);
		if (s)
			return s;
	}
	return KRED_OK;
}

/* Marks every node under root (ids are topological, so one downward sweep suffices).
 * Returns a calloc'ed array of root->id + 1 flags, or NULL. */
static unsigned char *mark_under(const struct kred__graph *g, const struct kred__node *root)
{
	unsigned char *mark = kred__calloc((size_t)root->id + 1, 1);

	if (!mark)
		return NULL;
	mark[root->id] = 1;
	for (int id = root->id; id >= 0; id--) {
		const struct kred__node *n = g->nodes[id];

		if (!mark[id])
			continue;
		for (int k = 0; k < n->nargs; k++)
			mark[n->arg[k]->id] = 1;
	}
	return mark;
}

int kred__node_count(const struct kred__graph *g, const struct kred__node *root)
{
	unsigned char *mark = mark_under(g, root);
	int count = 0;

	if (!mark)
		return -1;
	for (int id = 0; id <= root->id; id++)
		count += mark[id];
	kred__free(mark);
	return count;
}

int kred__node_uses(const struct kred__node *root, const struct kred__node *v)
{
	/* Iterative DFS with an explicit stack: formulas may be deep after differentiation. */
	const struct kred__node **stack;
	unsigned char *seen;
	int top = 0, found = 0;
	size_t cap = 64;

	if (root == v)
		return 1;
	if (v->id > root->id)
		return 0;
	seen = kred__calloc((size_t)root->id + 1, 1);
	stack = kred__malloc(cap * sizeof(*stack));
	if (!seen || !stack) {
		kred__free(seen);
		kred__free(stack);
		return -1;
	}
	stack[top++] = root;
	while (top > 0 && !found) {
		const struct kred__node *n = stack[--top];

		for (int k = 0; k < n->nargs; k++) {
			const struct kred__node *a = n->arg[k];

			if (a == v) {
				found = 1;
				break;
			}
			if (seen[a->id] || a->id < v->id)
				continue;
			seen[a->id] = 1;
			if ((size_t)top == cap) {
				const struct kred__node **s =
					kred__realloc(stack, 2 * cap * sizeof(*stack));
				if (!s) {
					found = -1;
					break;
				}
				stack = s;
				cap *= 2;
			}
			stack[top++] = a;
		}
	}
	kred__free(seen);
	kred__free(stack);
	return found;
}

const struct kred__node *kred__node_import(struct kred__graph *dst, const struct kred__node *n,
					   struct kred__error *err)
{
	return kred__node_import_recat(dst, n, NULL, 0, err);
}

const struct kred__node *kred__node_import_recat(struct kred__graph *dst,
						 const struct kred__node *n, const int *cat,
						 int n_cat, struct kred__error *err)
{
	/* Post-order walk with an explicit stack; map[id] is the image of source node id. */
	const struct kred__node **map, **stack, *out = NULL;
	size_t cap = 64;
	int top = 0;

	if (!n)
		return NULL;
	map = kred__calloc((size_t)n->id + 1, sizeof(*map));
	stack = kred__malloc(cap * sizeof(*stack));
	if (!map || !stack) {
		kred__fail(err, KRED_ENOMEM, -1, "out of memory");
		goto done;
	}
	stack[top++] = n;
	while (top > 0) {
		const struct kred__node *s = stack[top - 1];
		const struct kred__node *args[KRED__MAX_ARGS];
		int ready = 1;

		if (map[s->id]) {
			top--;
			continue;
		}
		for (int k = 0; k < s->nargs; k++) {
			if (map[s->arg[k]->id])
				continue;
			ready = 0;
			if ((size_t)top == cap) {
				const struct kred__node **p =
					kred__realloc(stack, 2 * cap * sizeof(*stack));
				if (!p) {
					kred__fail(err, KRED_ENOMEM, -1, "out of memory");
					goto done;
				}
				stack = p;
				cap *= 2;
			}
			stack[top++] = s->arg[k];
		}
		if (!ready)
			continue;
		for (int k = 0; k < s->nargs; k++)
			args[k] = map[s->arg[k]->id];
		if (s->op == KRED__OP_VAR && cat && s->ints[0] < n_cat && cat[s->ints[0]] >= 0) {
			const int ints[3] = { s->ints[0], s->ints[1], cat[s->ints[0]] };

			map[s->id] = kred__node(dst, s->op, 0, NULL, 3, ints, s->value, err);
		} else {
			map[s->id] = kred__node(dst, s->op, s->nargs, args, s->nint, s->ints,
						s->value, err);
		}
		if (!map[s->id])
			goto done;
		top--;
	}
	out = map[n->id];
done:
	kred__free(map);
	kred__free(stack);
	return out;
}

/* ---- printing */

#define PRINT_LIMIT (4u << 20) /* a DAG printed as a tree can grow exponentially */

/* Appends to the text being printed, unless it is already past PRINT_LIMIT: then nothing
 * more is written, so that a cut text is a prefix of the whole one (the frames still on
 * the stack would otherwise append their closing parentheses and commas to it). */
static void put(struct kred__buf *b, const char *s)
{
	if (b->len <= PRINT_LIMIT)
		kred__buf_puts(b, s);
}

static void putf(struct kred__buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void putf(struct kred__buf *b, const char *fmt, ...)
{
	va_list ap;

	if (b->len > PRINT_LIMIT)
		return;
	va_start(ap, fmt);
	kred__buf_vprintf(b, fmt, ap);
	va_end(ap);
}

static void print_double(struct kred__buf *b, double v)
{
	char s[40];

	if (isnan(v)) {
		put(b, "NaN");
		return;
	}
	if (isinf(v)) {
		put(b, v > 0 ? "Inf" : "-Inf");
		return;
	}
	if (v == floor(v) && fabs(v) < 1e15) {
		snprintf(s, sizeof(s), "%.0f", v);
		if (v == 0 && signbit(v))
			snprintf(s, sizeof(s), "-0.0");
		put(b, s);
		return;
	}
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(s, sizeof(s), "%.*g", prec, v);
		if (strtod(s, NULL) == v)
			break;
	}
	put(b, s);
}

static void print_node(const struct kred__graph *g, const struct kred__node *n,
		       struct kred__buf *b)
{
	const char *sig = kred__ops[n->op].sig;
	int ai = 0, ii = 0;

	if (b->oom || b->len > PRINT_LIMIT)
		return;
	if (n->op == KRED__OP_CST) {
		print_double(b, n->value);
		return;
	}
	if (n->op == KRED__OP_VAR) {
		for (int k = 0; k < g->n_vars; k++) {
			const struct kred__var *v = &g->vars[k];

			if (v->pos == n->ints[0] && v->dim == n->ints[1] && v->cat == n->ints[2]) {
				put(b, v->name);
				return;
			}
		}
		putf(b, "Var(%d,%d,%d)", n->ints[0], n->ints[1], n->ints[2]);
		return;
	}
	putf(b, "%s(", kred__ops[n->op].name);
	for (const char *c = sig; *c; c++) {
		if (c != sig)
			put(b, ",");
		switch (*c) {
		case 'f':
		case 'v':
			print_node(g, n->arg[ai++], b);
			break;
		case 'i':
		case 'p':
			putf(b, "%d", n->ints[ii++]);
			break;
		case 'L': {
			int len = n->ints[ii++];

			put(b, "Ind(");
			for (int k = 0; k < len; k++)
				putf(b, k ? ",%d" : "%d", n->ints[ii++]);
			put(b, ")");
			break;
		}
		}
	}
	put(b, ")");
}

char *kred__node_print(const struct kred__graph *g, const struct kred__node *n)
{
	struct kred__buf b = { 0 };

	print_node(g, n, &b);
	if (b.len > PRINT_LIMIT) {
		b.len = PRINT_LIMIT;
		kred__buf_puts(&b, "...");
	}
	return kred__buf_take(&b);
}
