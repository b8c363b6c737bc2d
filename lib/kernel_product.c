/* kernel_product: kernels by name ("gaussian(x,y) * linear(u,v)**2") and KeOps' eight
 * modes, translated into an ordinary formula, aliases and reduction (a kred_spec). */
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* ---- the atomic formulas. Each is written around its core quantity, the weighted
 * squared distance WeightedSqDist(G,x,y) (or (x|y) for linear): sum_pre CORE sum_post is
 * the kernel, log_pre CORE log_post its log. The log forms are KeOps' own, so that the
 * log modes never take the log of an exponential (exp(-D) would underflow to 0 for far
 * points, while -D is exact). */
enum kp_atom { KP_LINEAR, KP_GAUSSIAN, KP_LAPLACIAN, KP_CAUCHY, KP_IMQ, KP_DISTANCE, KP_N_ATOMS };

static const struct atom_info {
	const char *name;
	const char *sum_pre, *sum_post;
	const char *log_pre, *log_post;
	int has_param;
} atom_info[KP_N_ATOMS] = {
	[KP_LINEAR] = { "linear", "", "", "Log(", ")", 0 },
	[KP_GAUSSIAN] = { "gaussian", "Exp(-", ")", "(-", ")", 1 },
	[KP_LAPLACIAN] = { "laplacian", "Exp(-Sqrt(", "))", "(-Sqrt(", "))", 1 },
	[KP_CAUCHY] = { "cauchy", "Inv(1 + ", ")", "(-Log(1 + ", "))", 1 },
	[KP_IMQ] = { "inverse_multiquadric", "Rsqrt(1 + ", ")", "(-Log(1 + ", ") / 2)", 1 },
	[KP_DISTANCE] = { "distance", "Sqrt(", ")", "(Log(", ") / 2)", 1 },
};

/* ---- the modes. In formula, '@' stands for the kernel (sum modes) or its log. */
#define IN_B KRED_KP_IN_B
#define IN_U KRED_KP_IN_U
#define IN_V KRED_KP_IN_V
#define IN_C KRED_KP_IN_C
#define IN_H KRED_KP_IN_H
#define IN_S KRED_KP_IN_S
#define IN_T KRED_KP_IN_T
#define N_INPUTS 7

static const struct mode_info {
	const char *name;
	const char *reduction;
	unsigned inputs;
	int log;      /* works with log K */
	int scalar_b; /* LogSumExp of b: E must be 1 */
	const char *formula;
} mode_info[] = {
	[KRED_KP_SUM] = { "sum", "Sum", IN_B, 0, 0, "@ * B" },
	[KRED_KP_LSE] = { "lse", "LogSumExp", IN_B, 1, 1, "@ + B" },
	[KRED_KP_LOG_SCALED] = { "log_scaled", "Sum", IN_B | IN_U | IN_V, 1, 0,
				 "Exp(@ + U + V) * B" },
	[KRED_KP_LOG_SCALED_LSE] = { "log_scaled_lse", "LogSumExp", IN_B | IN_U | IN_V, 1, 1,
				     "@ + U + V + B" },
	[KRED_KP_LOG_SCALED_BARYCENTER] = { "log_scaled_barycenter", "Sum",
					    IN_B | IN_U | IN_V | IN_C, 1, 0,
					    "Exp(@ + U + V) * (B - C)" },
	[KRED_KP_LSE_MULT_I] = { "lse_mult_i", "LogSumExp", IN_B | IN_H, 1, 1, "H * @ + B" },
	[KRED_KP_SINKHORN_COST] = { "sinkhorn_cost", "Sum", IN_S | IN_T, 1, 0,
				    "-@ * Exp(@ + S + T)" },
	[KRED_KP_SINKHORN_PRIMAL] = { "sinkhorn_primal", "Sum", IN_U | IN_V | IN_S | IN_T, 1, 0,
				      "(U + V - 1) * Exp(@ + S + T)" },
};
#define N_MODES (sizeof(mode_info) / sizeof(mode_info[0]))

/* The extra inputs in argument order: alias name, category, and whether it has E columns
 * (else 1). The bit of row k is 1 << k. */
static const struct input_info {
	const char *alias;
	const char *cat;
	int has_e;
} input_info[N_INPUTS] = {
	{ "B", "Vj", 1 }, { "U", "Vi", 0 }, { "V", "Vj", 0 }, { "C", "Vi", 1 },
	{ "H", "Vi", 0 }, { "S", "Vi", 0 }, { "T", "Vj", 0 },
};

kred_status kred_kernel_mode_parse(const char *name, kred_kernel_mode *out)
{
	if (!name || !out)
		return KRED_EINVAL;
	for (size_t m = 0; m < N_MODES; m++) {
		if (strcmp(name, mode_info[m].name) == 0) {
			*out = (kred_kernel_mode)m;
			return KRED_OK;
		}
	}
	return KRED_EINVAL;
}

const char *kred_kernel_mode_name(kred_kernel_mode mode)
{
	return (unsigned)mode < N_MODES ? mode_info[mode].name : NULL;
}

unsigned kred_kernel_mode_inputs(kred_kernel_mode mode)
{
	return (unsigned)mode < N_MODES ? mode_info[mode].inputs : 0;
}

/* ---- the kernel text: a small tree. */
enum kp_op { KP_ATOM, KP_INT, KP_ADD, KP_SUB, KP_MUL, KP_NEG, KP_POW };

struct kp_node {
	enum kp_op op;
	int a, b;     /* children (node indices), -1 if none */
	int atom;     /* KP_ATOM: its kind, pair and index among the atoms */
	int pair, index;
	long value;   /* KP_INT: the constant; KP_POW: the exponent */
	size_t at;    /* byte offset in the text */
	int height;   /* 1 for a leaf, else 1 + the highest child's: <= KRED__MAX_HEIGHT,
		       * which bounds the recursive walks below */
};

#define MAX_PAIRS 13 /* 26 letters, two per pair */
#define MAX_EXPONENT 1000
#define KP_MAX_NESTING 256 /* parentheses and minus signs: kernels are short */
#define MAX_CONSTANT 1000000000L

struct kred_kernel {
	char *text;
	struct kp_node *nodes;
	int n_nodes, cap_nodes;
	int root;
	int *atoms; /* node index of each atom, in order of appearance */
	int n_atoms, cap_atoms;
	struct {
		char x, y;
		size_t at; /* where the pair first appears */
	} pairs[MAX_PAIRS];
	int n_pairs;
};

struct kp_parser {
	struct kred_kernel *k;
	const char *s;
	size_t pos;
	int depth;
	struct kred__error *err;
};

static void skip_space(struct kp_parser *p)
{
	while (p->s[p->pos] && isspace((unsigned char)p->s[p->pos]))
		p->pos++;
}

/* The current character after spaces (0 at the end). */
static char peek(struct kp_parser *p)
{
	skip_space(p);
	return p->s[p->pos];
}

static int fail_at(struct kp_parser *p, size_t at, kred_status s, const char *what)
{
	kred__fail(p->err, s, (long)at, "%s", what);
	return -1;
}

/* "expected X, found 'c'" at the current position. */
static int expected(struct kp_parser *p, const char *what)
{
	char c = peek(p);

	if (!c)
		kred__fail(p->err, KRED_ESYNTAX, (long)p->pos, "expected %s, found the end of the "
			   "kernel", what);
	else
		kred__fail(p->err, KRED_ESYNTAX, (long)p->pos, "expected %s, found '%c'", what, c);
	return -1;
}

static int new_node(struct kp_parser *p, enum kp_op op, int a, int b, size_t at)
{
	struct kred_kernel *k = p->k;
	struct kp_node *n;
	int height = 1;

	if (a >= 0 && k->nodes[a].height >= height)
		height = k->nodes[a].height + 1;
	if (b >= 0 && k->nodes[b].height >= height)
		height = k->nodes[b].height + 1;
	if (height > KRED__MAX_HEIGHT) {
		kred__fail(p->err, KRED_EDEPTH, (long)at,
			   "kernel too deep: a chain of more than %d nested operations",
			   KRED__MAX_HEIGHT);
		return -1;
	}
	if (k->n_nodes == k->cap_nodes) {
		int cap = k->cap_nodes ? 2 * k->cap_nodes : 16;
		struct kp_node *nodes = kred__realloc(k->nodes, (size_t)cap * sizeof(*nodes));

		if (!nodes) {
			kred__fail(p->err, KRED_ENOMEM, -1, "out of memory");
			return -1;
		}
		k->nodes = nodes;
		k->cap_nodes = cap;
	}
	n = &k->nodes[k->n_nodes];
	memset(n, 0, sizeof(*n));
	n->op = op;
	n->a = a;
	n->b = b;
	n->at = at;
	n->height = height;
	return k->n_nodes++;
}

/* A variable: one lowercase letter. Returns its offset, or -1. */
static long variable(struct kp_parser *p, char *letter)
{
	size_t start, end;

	skip_space(p);
	start = end = p->pos;
	/* Take the whole would-be name, so that "x'" or "yy" is reported as one word. */
	while (p->s[end] && !isspace((unsigned char)p->s[end]) && !strchr(",()", p->s[end]))
		end++;
	if (end == start)
		return expected(p, "a variable (a single lowercase letter)");
	if (end - start != 1 || !islower((unsigned char)p->s[start])) {
		kred__fail(p->err, KRED_ESYNTAX, (long)start,
			   "variable '%.*s' is not a single lowercase letter", (int)(end - start),
			   p->s + start);
		return -1;
	}
	*letter = p->s[start];
	p->pos = end;
	return (long)start;
}

/* The pair (x, y), made if new. A letter keeps the pair and the role it first had. */
static int find_pair(struct kp_parser *p, char x, size_t at_x, char y, size_t at_y)
{
	struct kred_kernel *k = p->k;

	if (x == y) {
		kred__fail(p->err, KRED_EALIAS, (long)at_y,
			   "both variables of the pair are '%c': a pair is two different letters",
			   x);
		return -1;
	}
	for (int q = 0; q < k->n_pairs; q++) {
		char qx = k->pairs[q].x, qy = k->pairs[q].y;
		/* the letter of (x,y) that (qx,qy) already holds, if any */
		int on_x = qx == x || qy == x, on_y = qx == y || qy == y;
		char c = on_x ? x : y;

		if (qx == x && qy == y)
			return q;
		if (on_x || on_y) {
			kred__fail(p->err, KRED_EALIAS, (long)(on_x ? at_x : at_y),
				   "(%c,%c) reuses '%c', the %s variable of the pair (%c,%c) at "
				   "byte %zu: a letter belongs to one pair, in one role", x, y, c,
				   qx == c ? "first" : "second", qx, qy, k->pairs[q].at);
			return -1;
		}
	}
	if (k->n_pairs == MAX_PAIRS) /* unreachable: 26 letters make 13 pairs */
		return fail_at(p, at_x, KRED_ERANGE, "too many pairs of variables");
	k->pairs[k->n_pairs].x = x;
	k->pairs[k->n_pairs].y = y;
	k->pairs[k->n_pairs].at = at_x;
	return k->n_pairs++;
}

static int add_atom(struct kp_parser *p, int node)
{
	struct kred_kernel *k = p->k;

	if (k->n_atoms == k->cap_atoms) {
		int cap = k->cap_atoms ? 2 * k->cap_atoms : 8;
		int *atoms = kred__realloc(k->atoms, (size_t)cap * sizeof(*atoms));

		if (!atoms) {
			kred__fail(p->err, KRED_ENOMEM, -1, "out of memory");
			return -1;
		}
		k->atoms = atoms;
		k->cap_atoms = cap;
	}
	k->nodes[node].index = k->n_atoms;
	k->atoms[k->n_atoms++] = node;
	return 0;
}

static int expr(struct kp_parser *p);

/* NAME(x,y) */
static int atom(struct kp_parser *p)
{
	size_t at = p->pos, len;
	int kind = -1, n, pair;
	long at_x, at_y;
	char x = 0, y = 0;

	while (isalnum((unsigned char)p->s[p->pos]) || p->s[p->pos] == '_')
		p->pos++;
	len = p->pos - at;
	for (int a = 0; a < KP_N_ATOMS; a++)
		if (strlen(atom_info[a].name) == len && !memcmp(atom_info[a].name, p->s + at, len))
			kind = a;
	if (kind < 0) {
		kred__fail(p->err, KRED_ENAME, (long)at,
			   "unknown kernel '%.*s' (known: linear, gaussian, laplacian, cauchy, "
			   "inverse_multiquadric, distance)", (int)len, p->s + at);
		return -1;
	}
	if (peek(p) != '(')
		return expected(p, "'(' after the kernel name");
	p->pos++;
	at_x = variable(p, &x);
	if (at_x < 0)
		return -1;
	if (peek(p) != ',')
		return expected(p, "',' between the two variables");
	p->pos++;
	at_y = variable(p, &y);
	if (at_y < 0)
		return -1;
	if (peek(p) != ')')
		return expected(p, "')' after the second variable");
	p->pos++;
	pair = find_pair(p, x, (size_t)at_x, y, (size_t)at_y);
	if (pair < 0)
		return -1;
	n = new_node(p, KP_ATOM, -1, -1, at);
	if (n < 0)
		return -1;
	p->k->nodes[n].atom = kind;
	p->k->nodes[n].pair = pair;
	if (add_atom(p, n))
		return -1;
	return n;
}

/* An integer: digits, at most MAX_CONSTANT. */
static int integer(struct kp_parser *p, long *v)
{
	size_t at = p->pos;

	*v = 0;
	if (!isdigit((unsigned char)p->s[p->pos]))
		return expected(p, "an integer");
	while (isdigit((unsigned char)p->s[p->pos])) {
		*v = *v * 10 + (p->s[p->pos++] - '0');
		if (*v > MAX_CONSTANT)
			return fail_at(p, at, KRED_ERANGE, "integer constant too large");
	}
	if (isalpha((unsigned char)p->s[p->pos]) || p->s[p->pos] == '.' || p->s[p->pos] == '_') {
		kred__fail(p->err, KRED_ESYNTAX, (long)p->pos,
			   "constants are integers: unexpected '%c' after '%.*s'", p->s[p->pos],
			   (int)(p->pos - at), p->s + at);
		return -1;
	}
	return 0;
}

static int primary(struct kp_parser *p)
{
	char c = peek(p);
	size_t at = p->pos;
	int n;

	if (isdigit((unsigned char)c)) {
		long v;

		if (integer(p, &v))
			return -1;
		n = new_node(p, KP_INT, -1, -1, at);
		if (n >= 0)
			p->k->nodes[n].value = v;
		return n;
	}
	if (c == '(') {
		p->pos++;
		n = expr(p);
		if (n < 0)
			return -1;
		if (peek(p) != ')')
			return expected(p, "')'");
		p->pos++;
		return n;
	}
	if (isalpha((unsigned char)c) || c == '_')
		return atom(p);
	return expected(p, "a kernel such as gaussian(x,y), an integer or '('");
}

static int is_pow(struct kp_parser *p)
{
	return peek(p) == '*' && p->s[p->pos + 1] == '*';
}

/* primary ['**' ['-'] INT] */
static int power(struct kp_parser *p)
{
	int n = primary(p), neg = 0;
	size_t at;
	long k;

	if (n < 0 || !is_pow(p))
		return n;
	at = p->pos;
	p->pos += 2;
	if (peek(p) == '-') {
		neg = 1;
		p->pos++;
		skip_space(p);
	}
	if (!isdigit((unsigned char)p->s[p->pos]))
		return expected(p, "an integer exponent after '**'");
	if (integer(p, &k))
		return -1;
	if (k > MAX_EXPONENT)
		return fail_at(p, at, KRED_ERANGE, "exponent out of range (at most 1000)");
	if (is_pow(p))
		return fail_at(p, p->pos, KRED_ESYNTAX,
			       "'a**b**c' is ambiguous: add parentheses");
	n = new_node(p, KP_POW, n, -1, at);
	if (n >= 0)
		p->k->nodes[n].value = neg ? -k : k;
	return n;
}

/* ['-'] unary | power */
static int unary(struct kp_parser *p)
{
	size_t at;
	int n;

	if (peek(p) != '-')
		return power(p);
	at = p->pos++;
	if (++p->depth > KP_MAX_NESTING)
		return fail_at(p, at, KRED_EDEPTH, "kernel nested too deeply");
	n = unary(p);
	p->depth--;
	return n < 0 ? -1 : new_node(p, KP_NEG, n, -1, at);
}

static int term(struct kp_parser *p)
{
	int n = unary(p);

	while (n >= 0 && peek(p) == '*' && !is_pow(p)) {
		size_t at = p->pos++;
		int b = unary(p);

		n = b < 0 ? -1 : new_node(p, KP_MUL, n, b, at);
	}
	return n;
}

static int expr(struct kp_parser *p)
{
	int n;

	if (++p->depth > KP_MAX_NESTING)
		return fail_at(p, p->pos, KRED_EDEPTH, "kernel nested too deeply");
	n = term(p);
	while (n >= 0 && (peek(p) == '+' || peek(p) == '-')) {
		size_t at = p->pos;
		enum kp_op op = p->s[p->pos++] == '+' ? KP_ADD : KP_SUB;
		int b = term(p);

		n = b < 0 ? -1 : new_node(p, op, n, b, at);
	}
	p->depth--;
	return n;
}

void kred_kernel_destroy(kred_kernel *k)
{
	if (!k)
		return;
	kred__free(k->text);
	kred__free(k->nodes);
	kred__free(k->atoms);
	kred__free(k);
}

/* Parses text into *out; on error records it on ctx (with the text and a caret). */
static kred_status parse(kred_context *ctx, const char *text, kred_kernel **out)
{
	struct kred__error err;
	struct kp_parser p = { .s = text, .err = &err };
	kred_kernel *k;

	*out = NULL;
	kred__error_clear(&err);
	k = kred__calloc(1, sizeof(*k));
	if (!k)
		return kred__ctx_fail(ctx, KRED_ENOMEM, "out of memory");
	p.k = k;
	k->text = kred__strdup(text);
	if (!k->text) {
		kred__fail(&err, KRED_ENOMEM, -1, "out of memory");
		goto fail;
	}
	if (!peek(&p)) {
		kred__fail(&err, KRED_ESYNTAX, (long)p.pos, "empty kernel");
		goto fail;
	}
	k->root = expr(&p);
	if (k->root < 0)
		goto fail;
	if (peek(&p)) {
		expected(&p, "an operator (+, -, *, **) or the end of the kernel");
		goto fail;
	}
	if (!k->n_atoms) {
		kred__fail(&err, KRED_ESYNTAX, 0, "the kernel has no atomic formula such as "
			   "gaussian(x,y)");
		goto fail;
	}
	*out = k;
	return KRED_OK;
fail:
	kred_kernel_destroy(k);
	return kred__ctx_set_error(ctx, &err, text);
}

kred_status kred_kernel_parse(kred_context *ctx, const char *text, kred_kernel **out)
{
	if (out)
		*out = NULL;
	if (!ctx)
		return KRED_EINVAL;
	kred__ctx_clear_error(ctx);
	if (!text || !out)
		return kred__ctx_fail(ctx, KRED_EINVAL, "kred_kernel_parse: NULL %s",
				      text ? "out" : "kernel text");
	return parse(ctx, text, out);
}

int kred_kernel_n_atoms(const kred_kernel *k)
{
	return k ? k->n_atoms : 0;
}

int kred_kernel_n_pairs(const kred_kernel *k)
{
	return k ? k->n_pairs : 0;
}

kred_status kred_kernel_atom(const kred_kernel *k, int a, const char **name, int *pair,
			     long *offset)
{
	const struct kp_node *n;

	if (!k || a < 0 || a >= k->n_atoms)
		return KRED_EINVAL;
	n = &k->nodes[k->atoms[a]];
	if (name)
		*name = atom_info[n->atom].name;
	if (pair)
		*pair = n->pair;
	if (offset)
		*offset = (long)n->at;
	return KRED_OK;
}

kred_status kred_kernel_pair(const kred_kernel *k, int p, char *x, char *y)
{
	if (!k || p < 0 || p >= k->n_pairs)
		return KRED_EINVAL;
	if (x)
		*x = k->pairs[p].x;
	if (y)
		*y = k->pairs[p].y;
	return KRED_OK;
}

/* ---- from the tree to formula text. Every composite is written in parentheses, so that
 * the text can be put in place of '@' in a mode's formula as it is. */

/* Whether node n is non-negative whatever the inputs: then log n can be built from the
 * atoms' logs. */
static int nonneg(const kred_kernel *k, int n)
{
	const struct kp_node *d = &k->nodes[n];

	switch (d->op) {
	case KP_ATOM: return d->atom != KP_LINEAR;
	case KP_INT: return 1;
	case KP_ADD:
	case KP_MUL: return nonneg(k, d->a) && nonneg(k, d->b);
	case KP_POW: return d->value % 2 == 0 || nonneg(k, d->a);
	default: return 0;
	}
}

/* The first node that makes n possibly negative (a linear atom, a minus), or -1. */
static int signed_part(const kred_kernel *k, int n)
{
	const struct kp_node *d = &k->nodes[n];
	int s;

	switch (d->op) {
	case KP_ATOM: return d->atom == KP_LINEAR ? n : -1;
	case KP_ADD:
	case KP_MUL:
		s = signed_part(k, d->a);
		return s >= 0 ? s : signed_part(k, d->b);
	case KP_POW: return d->value % 2 == 0 ? -1 : signed_part(k, d->a);
	case KP_SUB:
	case KP_NEG: return n;
	default: return -1;
	}
}

static void core(struct kred__buf *b, const kred_kernel *k, const struct kp_node *d)
{
	char x = k->pairs[d->pair].x, y = k->pairs[d->pair].y;

	if (atom_info[d->atom].has_param)
		kred__buf_printf(b, "WeightedSqDist(G_%d,%c,%c)", d->index, x, y);
	else
		kred__buf_printf(b, "(%c|%c)", x, y);
}

static void emit(struct kred__buf *b, const kred_kernel *k, int n)
{
	const struct kp_node *d = &k->nodes[n];
	static const char *const infix[] = { [KP_ADD] = " + ", [KP_SUB] = " - ",
					     [KP_MUL] = " * " };

	switch (d->op) {
	case KP_ATOM:
		kred__buf_puts(b, atom_info[d->atom].sum_pre);
		core(b, k, d);
		kred__buf_puts(b, atom_info[d->atom].sum_post);
		break;
	case KP_INT:
		kred__buf_printf(b, "%ld", d->value);
		break;
	case KP_ADD:
	case KP_SUB:
	case KP_MUL:
		kred__buf_puts(b, "(");
		emit(b, k, d->a);
		kred__buf_puts(b, infix[d->op]);
		emit(b, k, d->b);
		kred__buf_puts(b, ")");
		break;
	case KP_NEG:
		kred__buf_puts(b, "(-");
		emit(b, k, d->a);
		kred__buf_puts(b, ")");
		break;
	case KP_POW:
		kred__buf_puts(b, "Pow(");
		emit(b, k, d->a);
		kred__buf_printf(b, ",%ld)", d->value);
		break;
	}
}

/* log n, for a node n that is non-negative. */
static void emit_log(struct kred__buf *b, const kred_kernel *k, int n)
{
	const struct kp_node *d = &k->nodes[n];

	switch (d->op) {
	case KP_ATOM:
		kred__buf_puts(b, atom_info[d->atom].log_pre);
		core(b, k, d);
		kred__buf_puts(b, atom_info[d->atom].log_post);
		break;
	case KP_MUL:
		kred__buf_puts(b, "(");
		emit_log(b, k, d->a);
		kred__buf_puts(b, " + ");
		emit_log(b, k, d->b);
		kred__buf_puts(b, ")");
		break;
	case KP_POW:
		if (nonneg(k, d->a)) {
			kred__buf_printf(b, "(%ld * ", d->value);
			emit_log(b, k, d->a);
			kred__buf_puts(b, ")");
			break;
		}
		/* an even power of a signed base */
		/* fallthrough */
	default:
		kred__buf_puts(b, "Log(");
		emit(b, k, n);
		kred__buf_puts(b, ")");
		break;
	}
}

/* The text of atom a as written, "gaussian(x,y)", for messages. */
static void atom_text(const kred_kernel *k, int a, char *buf, size_t len)
{
	const struct kp_node *d = &k->nodes[k->atoms[a]];

	snprintf(buf, len, "%s(%c,%c) at byte %zu", atom_info[d->atom].name,
		 k->pairs[d->pair].x, k->pairs[d->pair].y, d->at);
}

static int param_values(kred_kernel_param p, int dim)
{
	switch (p) {
	case KRED_KP_SCALAR:
	case KRED_KP_SCALAR_J: return 1;
	case KRED_KP_DIAGONAL:
	case KRED_KP_DIAGONAL_J: return dim;
	case KRED_KP_FULL:
	case KRED_KP_FULL_J: return dim * dim;
	default: return 0;
	}
}

/* Checks kp against the parsed kernel k; records the error on ctx. */
static kred_status check(kred_context *ctx, const kred_kernel_product_spec *kp,
			 const kred_kernel *k)
{
	const struct mode_info *m = &mode_info[kp->mode];
	struct kred__buf list = { 0 };
	char what[96];
	kred_status s;
	int bad;

	if (kp->n_pairs != (size_t)k->n_pairs || kp->n_params != (size_t)k->n_atoms) {
		int pairs = kp->n_pairs != (size_t)k->n_pairs;

		for (int q = 0; pairs && q < k->n_pairs; q++)
			kred__buf_printf(&list, "%s(%c,%c)", q ? ", " : " ", k->pairs[q].x,
					 k->pairs[q].y);
		for (int a = 0; !pairs && a < k->n_atoms; a++)
			kred__buf_printf(&list, "%s%s", a ? ", " : " ",
					 atom_info[k->nodes[k->atoms[a]].atom].name);
		s = kred__ctx_fail(ctx, KRED_EINVAL,
				   pairs ? "the kernel has %d pair%s of variables (%s), but %zu "
					   "dimension%s given"
					 : "the kernel has %d atomic formula%s (%s), but %zu "
					   "parameter%s given (one per atomic formula, "
					   "KRED_KP_NONE for linear)",
				   pairs ? k->n_pairs : k->n_atoms,
				   (pairs ? k->n_pairs : k->n_atoms) == 1 ? "" : "s",
				   list.p ? list.p + 1 : "",
				   pairs ? kp->n_pairs : kp->n_params,
				   (pairs ? kp->n_pairs : kp->n_params) == 1 ? " is" : "s are");
		kred__buf_free(&list);
		return s;
	}
	if ((k->n_pairs && !kp->dims) || (k->n_atoms && !kp->params))
		return kred__ctx_fail(ctx, KRED_EINVAL, "the kernel product spec has no %s",
				      !kp->dims ? "dims" : "params");
	for (int q = 0; q < k->n_pairs; q++)
		if (kp->dims[q] < 1 || kp->dims[q] > KRED__MAX_DIM)
			return kred__ctx_fail(ctx, KRED_EINVAL, "pair %d (%c,%c): dimension %d "
					      "out of range (1 to %d)", q, k->pairs[q].x,
					      k->pairs[q].y, kp->dims[q], KRED__MAX_DIM);
	for (int a = 0; a < k->n_atoms; a++) {
		const struct kp_node *d = &k->nodes[k->atoms[a]];
		kred_kernel_param p = kp->params[a];
		int dim = kp->dims[d->pair];

		atom_text(k, a, what, sizeof(what));
		if ((unsigned)p > KRED_KP_FULL_J)
			return kred__ctx_fail(ctx, KRED_EINVAL, "parameter %d (%s): invalid "
					      "shape %d", a, what, (int)p);
		if (!atom_info[d->atom].has_param && p != KRED_KP_NONE)
			return kred__ctx_fail(ctx, KRED_EINVAL, "parameter %d (%s): linear takes "
					      "no parameter (KRED_KP_NONE)", a, what);
		if (atom_info[d->atom].has_param && p == KRED_KP_NONE)
			return kred__ctx_fail(ctx, KRED_EINVAL, "parameter %d (%s): %s needs a "
					      "parameter (a scalar, a diagonal or a full "
					      "matrix)", a, what, atom_info[d->atom].name);
		if ((p == KRED_KP_FULL || p == KRED_KP_FULL_J) && dim > 256)
			return kred__ctx_fail(ctx, KRED_EINVAL, "parameter %d (%s): a full "
					      "matrix in dimension %d has more than %d values",
					      a, what, dim, KRED__MAX_DIM);
	}
	if (kp->e < 0 || kp->e > KRED__MAX_DIM)
		return kred__ctx_fail(ctx, KRED_EINVAL, "e = %d is out of range (1 to %d)", kp->e,
				      KRED__MAX_DIM);
	if (m->scalar_b && kp->e > 1)
		return kred__ctx_fail(ctx, KRED_EDIM, "mode %s takes b of dimension 1 (ny x 1), "
				      "not %d", m->name, kp->e);
	bad = m->log ? signed_part(k, k->root) : -1;
	if (bad >= 0) {
		const struct kp_node *d = &k->nodes[bad];
		struct kred__error err;

		kred__error_clear(&err);
		if (d->op == KP_ATOM)
			kred__fail(&err, KRED_EINVAL, (long)d->at,
				   "mode %s works with log K, so K may not be negative, and "
				   "linear(%c,%c) can be (square it, or use mode sum)", m->name,
				   k->pairs[d->pair].x, k->pairs[d->pair].y);
		else
			kred__fail(&err, KRED_EINVAL, (long)d->at,
				   "mode %s works with log K, so K may not be negative, and this "
				   "minus makes it so (use mode sum)", m->name);
		return kred__ctx_set_error(ctx, &err, k->text);
	}
	return KRED_OK;
}

/* Appends the spec's strings (formula, reduction, then the aliases) to b, each followed
 * by its NUL, and counts the aliases. */
static void spec_text(struct kred__buf *b, const kred_kernel_product_spec *kp,
		      const kred_kernel *k, size_t *n_aliases)
{
	const struct mode_info *m = &mode_info[kp->mode];
	struct kred__buf body = { 0 };
	int e = kp->e ? kp->e : 1;
	char *t;

	if (m->log)
		emit_log(&body, k, k->root);
	else
		emit(&body, k, k->root);
	t = kred__buf_take(&body);
	if (!t) {
		b->oom = 1;
		return;
	}
	for (const char *c = m->formula; *c; c++) {
		if (*c == '@')
			kred__buf_puts(b, t);
		else
			kred__buf_printf(b, "%c", *c);
	}
	kred__free(t);
	kred__buf_printf(b, "%c%s%c", 0, m->reduction, 0);
	*n_aliases = 0;
	for (int a = 0; a < k->n_atoms; a++) {
		const struct kp_node *d = &k->nodes[k->atoms[a]];
		kred_kernel_param p = kp->params[a];

		if (p == KRED_KP_NONE)
			continue;
		kred__buf_printf(b, "G_%d = %s(%d)%c", a, p >= KRED_KP_SCALAR_J ? "Vj" : "Pm",
				 param_values(p, kp->dims[d->pair]), 0);
		++*n_aliases;
	}
	for (int q = 0; q < k->n_pairs; q++)
		kred__buf_printf(b, "%c = Vi(%d)%c", k->pairs[q].x, kp->dims[q], 0);
	for (int q = 0; q < k->n_pairs; q++)
		kred__buf_printf(b, "%c = Vj(%d)%c", k->pairs[q].y, kp->dims[q], 0);
	*n_aliases += 2 * (size_t)k->n_pairs;
	for (int in = 0; in < N_INPUTS; in++) {
		if (!(m->inputs & (1u << in)))
			continue;
		kred__buf_printf(b, "%s = %s(%d)%c", input_info[in].alias, input_info[in].cat,
				 input_info[in].has_e ? e : 1, 0);
		++*n_aliases;
	}
}

/* Checks the spec's own fields; records the error on ctx. */
static kred_status check_spec(kred_context *ctx, const kred_kernel_product_spec *kp)
{
	if (!kp || !kp->kernel)
		return kred__ctx_fail(ctx, KRED_EINVAL, "kernel product: NULL %s",
				      kp ? "kernel text" : "spec");
	if ((unsigned)kp->mode >= N_MODES)
		return kred__ctx_fail(ctx, KRED_EINVAL, "kernel product: invalid mode %d",
				      (int)kp->mode);
	if ((unsigned)kp->dtype > KRED_FLOAT64 || (unsigned)kp->sum_scheme > KRED_SUM_KAHAN)
		return kred__ctx_fail(ctx, KRED_EINVAL, "kernel product: invalid dtype or sum "
				      "scheme (%d, %d)", (int)kp->dtype, (int)kp->sum_scheme);
	return KRED_OK;
}

kred_status kred_kernel_product_spec_build(kred_context *ctx, const kred_kernel_product_spec *kp,
					   kred_spec **out)
{
	struct kred__buf b = { 0 };
	kred_kernel *k = NULL;
	kred_spec *spec;
	const char **aliases;
	size_t n_aliases = 0, head;
	const char *c;
	kred_status s;

	if (out)
		*out = NULL;
	if (!ctx)
		return KRED_EINVAL;
	kred__ctx_clear_error(ctx);
	if (!out)
		return kred__ctx_fail(ctx, KRED_EINVAL, "kred_kernel_product_spec_build: NULL out");
	s = check_spec(ctx, kp);
	if (s)
		return s;
	s = parse(ctx, kp->kernel, &k);
	if (s)
		return s;
	s = check(ctx, kp, k);
	if (s)
		goto done;
	spec_text(&b, kp, k, &n_aliases);
	if (b.oom) {
		s = kred__ctx_fail(ctx, KRED_ENOMEM, "out of memory");
		goto done;
	}
	/* One block: the struct, the alias pointers, then the strings. */
	head = sizeof(*spec) + n_aliases * sizeof(*aliases);
	spec = kred__malloc(head + b.len);
	if (!spec) {
		s = kred__ctx_fail(ctx, KRED_ENOMEM, "out of memory");
		goto done;
	}
	memset(spec, 0, sizeof(*spec));
	aliases = (const char **)(spec + 1);
	c = (char *)spec + head;
	memcpy((char *)c, b.p, b.len);
	spec->formula = c;
	c += strlen(c) + 1;
	spec->reduction = c;
	c += strlen(c) + 1;
	for (size_t a = 0; a < n_aliases; a++) {
		aliases[a] = c;
		c += strlen(c) + 1;
	}
	spec->aliases = aliases;
	spec->n_aliases = n_aliases;
	spec->axis = KRED_REDUCE_J;
	spec->dtype = kp->dtype;
	spec->sum_scheme = kp->sum_scheme;
	*out = spec;
done:
	kred__buf_free(&b);
	kred_kernel_destroy(k);
	return s;
}

kred_status kred_kernel_product_create(kred_context *ctx, const kred_kernel_product_spec *kp,
				       kred_reduction **out)
{
	kred_spec *spec;
	kred_status s;

	if (out)
		*out = NULL;
	if (!ctx)
		return KRED_EINVAL;
	if (!out) {
		kred__ctx_clear_error(ctx);
		return kred__ctx_fail(ctx, KRED_EINVAL, "kred_kernel_product_create: NULL out");
	}
	s = kred_kernel_product_spec_build(ctx, kp, &spec);
	if (s)
		return s;
	s = kred_reduction_create(ctx, spec, out);
	kred__free(spec);
	return s;
}

/* The named inputs in argument order; n_args is how many there are. Records the error on
 * ctx (a NULL input with rows to read). */
static kred_status pack_args(kred_context *ctx, const kred_kernel_product_spec *kp,
			     int64_t nx, int64_t ny, const kred_kernel_product_args *a,
			     const void **args, int *n_args)
{
	const struct mode_info *m = &mode_info[kp->mode];
	const void *in[N_INPUTS] = { a->b, a->u, a->v, a->c, a->h, a->s, a->t };
	int n = 0;

	if ((kp->n_params && !kp->params) || (kp->n_pairs && !kp->dims))
		return kred__ctx_fail(ctx, KRED_EINVAL, "the kernel product spec has no %s",
				      !kp->dims ? "dims" : "params");
	for (size_t g = 0; g < kp->n_params; g++) {
		if (kp->params[g] == KRED_KP_NONE)
			continue;
		if ((!a->gamma || !a->gamma[g]) && (kp->params[g] < KRED_KP_SCALAR_J || ny > 0))
			return kred__ctx_fail(ctx, KRED_EINVAL, "gamma %zu is NULL", g);
		args[n++] = a->gamma ? a->gamma[g] : NULL;
	}
	if (kp->n_pairs && ((!a->x && nx > 0) || (!a->y && ny > 0)))
		return kred__ctx_fail(ctx, KRED_EINVAL, "the %s array is NULL", !a->x ? "x" : "y");
	for (size_t q = 0; q < kp->n_pairs; q++) {
		if (nx > 0 && !a->x[q])
			return kred__ctx_fail(ctx, KRED_EINVAL, "x of pair %zu is NULL", q);
		args[n++] = a->x ? a->x[q] : NULL;
	}
	for (size_t q = 0; q < kp->n_pairs; q++) {
		if (ny > 0 && !a->y[q])
			return kred__ctx_fail(ctx, KRED_EINVAL, "y of pair %zu is NULL", q);
		args[n++] = a->y ? a->y[q] : NULL;
	}
	for (int k = 0; k < N_INPUTS; k++) {
		int64_t rows = input_info[k].cat[1] == 'i' ? nx : ny;

		if (!(m->inputs & (1u << k)))
			continue;
		if (!in[k] && rows > 0)
			return kred__ctx_fail(ctx, KRED_EINVAL, "mode %s needs %c (%s x %d), and "
					      "it is NULL", m->name, tolower((unsigned char)input_info[k].alias[0]),
					      input_info[k].cat[1] == 'i' ? "nx" : "ny",
					      input_info[k].has_e ? (kp->e ? kp->e : 1) : 1);
		args[n++] = in[k];
	}
	*n_args = n;
	return KRED_OK;
}

kred_status kred_kernel_product_run(kred_reduction *r, const kred_kernel_product_spec *kp,
				    int64_t nx, int64_t ny, const kred_kernel_product_args *args,
				    void *out)
{
	const void **pos = NULL;
	int n = 0;
	kred_status s;

	if (!r)
		return KRED_EINVAL;
	kred__ctx_clear_error(r->ctx);
	s = check_spec(r->ctx, kp);
	if (s)
		return s;
	if (!args)
		return kred__ctx_fail(r->ctx, KRED_EINVAL, "kred_kernel_product_run: NULL args");
	if (kp->n_params > (size_t)INT_MAX / 2 || kp->n_pairs > MAX_PAIRS)
		return kred__ctx_fail(r->ctx, KRED_EINVAL, "the kernel product spec has %zu "
				      "parameters and %zu pairs", kp->n_params, kp->n_pairs);
	pos = kred__calloc(kp->n_params + 2 * kp->n_pairs + N_INPUTS, sizeof(*pos));
	if (!pos)
		return kred__ctx_fail(r->ctx, KRED_ENOMEM, "out of memory");
	s = pack_args(r->ctx, kp, nx, ny, args, pos, &n);
	if (s)
		goto done;
	if (n != kred_reduction_n_args(r)) {
		s = kred__ctx_fail(r->ctx, KRED_EINVAL, "the reduction takes %d arguments, the "
				   "kernel product spec gives %d: was it made from this spec?",
				   kred_reduction_n_args(r), n);
		goto done;
	}
	s = kred_reduction_run(r, nx, ny, pos, out);
done:
	kred__free(pos);
	return s;
}

kred_status kred_kernel_product(kred_context *ctx, const kred_kernel_product_spec *kp, int64_t nx,
				int64_t ny, const kred_kernel_product_args *args, void *out)
{
	kred_reduction *r;
	kred_status s;

	s = kred_kernel_product_create(ctx, kp, &r);
	if (s)
		return s;
	s = kred_kernel_product_run(r, kp, nx, ny, args, out);
	kred_reduction_destroy(r);
	return s;
}
