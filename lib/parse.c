/* The formula parser: a lexer and a precedence-climbing parser (after Lua's subexpr) that
 * builds hash-consed nodes through the op table. Errors carry a byte offset. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

enum tok {
	T_END, T_NUM, T_NAME, T_LPAR, T_RPAR, T_COMMA, T_PLUS, T_MINUS, T_STAR, T_SLASH,
	T_POW, T_BAR, T_EQ, T_NE, T_LT, T_GT, T_LE, T_GE, T_ASSIGN, T_BAD
};

struct parser {
	struct kred__graph *g;
	const char *src;
	size_t pos;	 /* next byte to lex */
	enum tok t;	 /* current token */
	size_t start;	 /* its offset */
	size_t len;	 /* its length */
	int depth;
	struct kred__error *err;
	const char *what; /* "formula" or "alias", for "found the end of the ..." */
};

static void next(struct parser *p)
{
	const char *s = p->src;
	size_t i = p->pos;

	while (s[i] && isspace((unsigned char)s[i]))
		i++;
	p->start = i;
	if (!s[i]) {
		p->t = T_END;
		p->len = 0;
		p->pos = i;
		return;
	}
	if (isdigit((unsigned char)s[i]) || (s[i] == '.' && isdigit((unsigned char)s[i + 1]))) {
		while (isdigit((unsigned char)s[i]))
			i++;
		if (s[i] == '.') {
			i++;
			while (isdigit((unsigned char)s[i]))
				i++;
		}
		if ((s[i] == 'e' || s[i] == 'E') &&
		    (isdigit((unsigned char)s[i + 1]) ||
		     ((s[i + 1] == '+' || s[i + 1] == '-') && isdigit((unsigned char)s[i + 2])))) {
			i += 2;
			while (isdigit((unsigned char)s[i]))
				i++;
		}
		p->t = T_NUM;
	} else if (isalpha((unsigned char)s[i]) || s[i] == '_') {
		while (isalnum((unsigned char)s[i]) || s[i] == '_')
			i++;
		p->t = T_NAME;
	} else {
		char c = s[i++], d = s[i];

		switch (c) {
		case '(': p->t = T_LPAR; break;
		case ')': p->t = T_RPAR; break;
		case ',': p->t = T_COMMA; break;
		case '+': p->t = T_PLUS; break;
		case '-': p->t = T_MINUS; break;
		case '/': p->t = T_SLASH; break;
		case '^': p->t = T_POW; break;
		case '|': p->t = T_BAR; break;
		case '*':
			p->t = d == '*' ? T_POW : T_STAR;
			i += d == '*';
			break;
		case '=':
			p->t = d == '=' ? T_EQ : T_ASSIGN;
			i += d == '=';
			break;
		case '!':
			p->t = d == '=' ? T_NE : T_BAD;
			i += d == '=';
			break;
		case '<':
			p->t = d == '=' ? T_LE : T_LT;
			i += d == '=';
			break;
		case '>':
			p->t = d == '=' ? T_GE : T_GT;
			i += d == '=';
			break;
		default: p->t = T_BAD; break;
		}
	}
	p->len = i - p->start;
	p->pos = i;
}

static const struct kred__node *syntax(struct parser *p, size_t at, const char *what)
{
	if (p->t == T_END)
		kred__fail(p->err, KRED_ESYNTAX, (long)at, "%s, found the end of the %s", what,
			   p->what);
	else
		kred__fail(p->err, KRED_ESYNTAX, (long)at, "%s, found '%.*s'", what,
			   (int)p->len, p->src + p->start);
	return NULL;
}

/* Gives a builder's error (dimension, range, memory) the offset of the construct. */
static const struct kred__node *placed(struct parser *p, const struct kred__node *n,
				       size_t at)
{
	if (!n && p->err->offset < 0)
		p->err->offset = (long)at;
	return n;
}

static int accept(struct parser *p, enum tok t)
{
	if (p->t != t)
		return 0;
	next(p);
	return 1;
}

/* An integer argument: optional sign, digits. */
static int int_arg(struct parser *p, int *out)
{
	int neg = 0;
	size_t at = p->start;
	long long v;
	char *end;

	if (p->t == T_MINUS) {
		neg = 1;
		next(p);
	}
	if (p->t != T_NUM) {
		syntax(p, p->start, "expected an integer");
		return -1;
	}
	errno = 0;
	v = strtoll(p->src + p->start, &end, 10);
	if (end != p->src + p->start + p->len) {
		syntax(p, p->start, "expected an integer");
		return -1;
	}
	if (errno || v > INT_MAX) {
		kred__fail(p->err, KRED_ERANGE, (long)at, "integer %s%.*s out of range",
			   neg ? "-" : "", (int)p->len, p->src + p->start);
		return -1;
	}
	*out = neg ? -(int)v : (int)v;
	next(p);
	return 0;
}

static int is_name(struct parser *p, const char *name)
{
	return p->t == T_NAME && p->len == strlen(name) && !memcmp(p->src + p->start, name, p->len);
}

/* An integer list argument: an integer, or Ind(a, b, ...). Appends (n, values) to ints. */
static int list_arg(struct parser *p, int *ints, int *nint)
{
	int at = (*nint)++, n = 0;

	if (*nint > KRED__MAX_INTS)
		goto too_long;
	if (!is_name(p, "Ind")) {
		if (int_arg(p, &ints[*nint]))
			return -1;
		(*nint)++;
		ints[at] = 1;
		return 0;
	}
	next(p);
	if (!accept(p, T_LPAR)) {
		syntax(p, p->start, "expected '(' after Ind");
		return -1;
	}
	do {
		if (*nint >= KRED__MAX_INTS)
			goto too_long;
		if (int_arg(p, &ints[(*nint)++]))
			return -1;
		n++;
	} while (accept(p, T_COMMA));
	if (!accept(p, T_RPAR)) {
		syntax(p, p->start, "expected ')' to close Ind(");
		return -1;
	}
	ints[at] = n;
	return 0;
too_long:
	kred__fail(p->err, KRED_ERANGE, (long)p->start, "integer lists too long (at most %d values)",
		   KRED__MAX_INTS - 4);
	return -1;
}

static const struct kred__node *subexpr(struct parser *p, int limit);

static int count_args_left(struct parser *p, int got)
{
	/* After a surplus ',' count the remaining top-level arguments for the message. */
	int depth = 0, n = got + 1;

	for (size_t i = p->pos; p->src[i]; i++) {
		if (p->src[i] == '(')
			depth++;
		else if (p->src[i] == ')' && depth-- == 0)
			break;
		else if (p->src[i] == ',' && depth == 0)
			n++;
	}
	return n;
}

static const struct kred__node *arity(struct parser *p, const char *name, size_t at,
				      int want, int got)
{
	kred__fail(p->err, KRED_EARITY, (long)at, "%s takes %d argument%s, got %d", name, want,
		   want == 1 ? "" : "s", got);
	return NULL;
}

static const struct kred__node *find_var_at(const struct kred__graph *g,
					    const struct kred__node *f, int pos)
{
	for (int id = f->id; id >= 0; id--) {
		const struct kred__node *n = g->nodes[id];

		if (n->op == KRED__OP_VAR && n->ints[0] == pos && kred__node_uses(f, n) == 1)
			return n;
	}
	return NULL;
}

/* Vi(POS,DIM), Vj, Vx, Vy, Pm(POS,DIM), Var(POS,DIM,CAT): -1 if name is none of them. */
static int var_category(const char *s, size_t len)
{
	static const struct { const char *name; int cat; } cats[] = {
		{ "Vi", KRED__CAT_I }, { "Vx", KRED__CAT_I }, { "Vj", KRED__CAT_J },
		{ "Vy", KRED__CAT_J }, { "Pm", KRED__CAT_P }, { "Var", 3 },
	};
	for (size_t k = 0; k < sizeof(cats) / sizeof(cats[0]); k++)
		if (strlen(cats[k].name) == len && !memcmp(cats[k].name, s, len))
			return cats[k].cat;
	return -1;
}

static const struct kred__node *positional_var(struct parser *p, int cat, size_t at,
					       const char *name)
{
	int v[3], n = cat == 3 ? 3 : 2, got = 0;

	while (got < n) {
		if (got && !accept(p, T_COMMA)) {
			if (p->t == T_RPAR)
				return arity(p, name, at, n, got);
			return syntax(p, p->start, "expected ','");
		}
		if (p->t == T_RPAR)
			return arity(p, name, at, n, got);
		if (int_arg(p, &v[got]))
			return NULL;
		got++;
	}
	if (p->t == T_COMMA)
		return arity(p, name, at, n, count_args_left(p, got));
	if (!accept(p, T_RPAR))
		return syntax(p, p->start, "expected ')'");
	if (cat != 3)
		v[2] = cat;
	return placed(p, kred__var_node(p->g, v[0], v[1], v[2], p->err), at);
}

static const struct kred__node *call(struct parser *p, size_t at, size_t len)
{
	const char *name = p->src + at;
	const struct kred__node *args[KRED__MAX_ARGS] = { 0 };
	size_t arg_at[KRED__MAX_ARGS] = { 0 };
	int ints[KRED__MAX_INTS], nint = 0, nargs = 0, cat, op, v;
	const char *sig;
	char opname[32];

	/* the current token is the '(' after the name */
	next(p);
	cat = var_category(name, len);
	if (cat >= 0) {
		snprintf(opname, sizeof(opname), "%.*s", (int)len, name);
		return positional_var(p, cat, at, opname);
	}
	if ((len == 6 && !memcmp(name, "IntCst", 6)) || (len == 6 && !memcmp(name, "IntInv", 6))) {
		int inv = name[3] == 'I';

		if (p->t == T_RPAR)
			return arity(p, inv ? "IntInv" : "IntCst", at, 1, 0);
		if (int_arg(p, &v))
			return NULL;
		if (p->t == T_COMMA)
			return arity(p, inv ? "IntInv" : "IntCst", at, 1, count_args_left(p, 1));
		if (!accept(p, T_RPAR))
			return syntax(p, p->start, "expected ')'");
		if (inv && v == 0) {
			kred__fail(p->err, KRED_ERANGE, (long)at, "IntInv(0) divides by zero");
			return NULL;
		}
		return placed(p, kred__cst(p->g, inv ? 1.0 / v : (double)v, p->err), at);
	}
	op = kred__op_lookup(name, len);
	if (op < 0) {
		kred__fail(p->err, KRED_ENAME, (long)at, "unknown operation '%.*s'", (int)len, name);
		return NULL;
	}
	sig = kred__ops[op].sig;
	for (int k = 0; sig[k]; k++) {
		if (k && !accept(p, T_COMMA)) {
			if (p->t == T_RPAR)
				return arity(p, kred__ops[op].name, at, (int)strlen(sig), k);
			return syntax(p, p->start, "expected ',' or ')'");
		}
		if (p->t == T_RPAR)
			return arity(p, kred__ops[op].name, at, (int)strlen(sig), k);
		switch (sig[k]) {
		case 'f':
		case 'v':
			arg_at[nargs] = p->start;
			args[nargs] = subexpr(p, 0);
			if (!args[nargs])
				return NULL;
			if (sig[k] == 'v' && args[nargs]->op != KRED__OP_VAR) {
				kred__fail(p->err, KRED_EGRAD, (long)arg_at[nargs],
					   "%s differentiates with respect to a variable, not a "
					   "formula", kred__ops[op].name);
				return NULL;
			}
			nargs++;
			break;
		case 'i':
		case 'p':
			if (int_arg(p, &ints[nint++]))
				return NULL;
			break;
		case 'L':
			if (list_arg(p, ints, &nint))
				return NULL;
			break;
		}
	}
	if (p->t == T_COMMA)
		return arity(p, kred__ops[op].name, at, (int)strlen(sig),
			     count_args_left(p, (int)strlen(sig)));
	if (!accept(p, T_RPAR))
		return syntax(p, p->start, "expected ')'");

	if (op == KRED__OP_GRADFROMPOS) {
		/* The variable is found by its position in the formula: a plain Grad after. */
		const struct kred__node *var = find_var_at(p->g, args[0], ints[0]);

		if (!var) {
			kred__fail(p->err, KRED_EGRAD, (long)at,
				   "GradFromPos: no variable at position %d in the formula", ints[0]);
			return NULL;
		}
		args[2] = args[1];
		args[1] = var;
		arg_at[2] = arg_at[1];
		return placed(p, kred__node(p->g, KRED__OP_GRAD, 3, args, 0, NULL, 0, p->err), at);
	}
	if (kred__ops[op].flags & KRED__OP_DERIV) {
		int uses = kred__node_uses(args[0], args[1]);

		if (uses < 0) {
			kred__fail(p->err, KRED_ENOMEM, (long)at, "out of memory");
			return NULL;
		}
		if (!uses) {
			kred__fail(p->err, KRED_EGRAD, (long)arg_at[1],
				   "%s with respect to a variable that does not occur in the formula",
				   kred__ops[op].name);
			return NULL;
		}
	}
	return placed(p, kred__node(p->g, op, nargs, args, nint, ints, 0, p->err), at);
}

static const struct kred__node *simple(struct parser *p)
{
	size_t at = p->start, len = p->len;

	switch (p->t) {
	case T_NUM: {
		char *end;
		double v = strtod(p->src + at, &end);

		if (!isfinite(v)) {
			kred__fail(p->err, KRED_ERANGE, (long)at, "number %.*s out of range",
				   (int)len, p->src + at);
			return NULL;
		}
		next(p);
		return placed(p, kred__cst(p->g, v, p->err), at);
	}
	case T_NAME: {
		const struct kred__var *v;

		next(p);
		if (p->t == T_LPAR)
			return call(p, at, len);
		v = kred__graph_find(p->g, p->src + at, len);
		if (v)
			return placed(p, kred__var_node(p->g, v->pos, v->dim, v->cat, p->err), at);
		if (kred__op_lookup(p->src + at, len) >= 0 || var_category(p->src + at, len) >= 0)
			kred__fail(p->err, KRED_ESYNTAX, (long)at, "'%.*s' needs its arguments in "
				   "parentheses", (int)len, p->src + at);
		else
			kred__fail(p->err, KRED_ENAME, (long)at, "unknown variable '%.*s'", (int)len,
				   p->src + at);
		return NULL;
	}
	case T_LPAR: {
		const struct kred__node *a, *b;
		size_t bar;

		next(p);
		a = subexpr(p, 0);
		if (!a)
			return NULL;
		if (p->t == T_BAR) {
			bar = p->start;
			next(p);
			b = subexpr(p, 0);
			if (!b)
				return NULL;
			if (p->t != T_RPAR) {
				kred__fail(p->err, KRED_ESYNTAX, (long)p->start,
					   "expected ')' to close the '(' at offset %zu", at);
				return NULL;
			}
			next(p);
			return placed(p, kred__op2(p->g, KRED__OP_SCALPROD, a, b, p->err), bar);
		}
		if (p->t != T_RPAR) {
			if (p->t == T_END)
				kred__fail(p->err, KRED_ESYNTAX, (long)p->start,
					   "missing ')' to close the '(' at offset %zu", at);
			else
				syntax(p, p->start, "expected ')'");
			return NULL;
		}
		next(p);
		return a;
	}
	case T_RPAR:
		kred__fail(p->err, KRED_ESYNTAX, (long)at, "unbalanced ')'");
		return NULL;
	case T_BAD:
		kred__fail(p->err, KRED_ESYNTAX, (long)at, "unexpected character '%.*s'", (int)len,
			   p->src + at);
		return NULL;
	default:
		return syntax(p, at, "expected a formula");
	}
}

/* Binary operators: {left, right} priorities as in Lua; unary minus binds tighter than
 * '*' and looser than '**', which is right-associative. */
static const struct {
	int left, right;
	enum kred__op op;
} binop[] = {
	[T_EQ] = { 1, 1, KRED__OP_EQUAL },    [T_NE] = { 1, 1, KRED__OP_NOTEQUAL },
	[T_LT] = { 1, 1, KRED__OP_LESS },     [T_GT] = { 1, 1, KRED__OP_GREATER },
	[T_LE] = { 1, 1, KRED__OP_LESSEQUAL }, [T_GE] = { 1, 1, KRED__OP_GREATEREQUAL },
	[T_PLUS] = { 2, 2, KRED__OP_ADD },     [T_MINUS] = { 2, 2, KRED__OP_SUBTRACT },
	[T_STAR] = { 3, 3, KRED__OP_MULT },    [T_SLASH] = { 3, 3, KRED__OP_DIVIDE },
	[T_POW] = { 6, 5, KRED__OP_POW },
};
#define UNARY_PRIORITY 4

static const struct kred__node *power(struct parser *p, const struct kred__node *a,
				      const struct kred__node *b, size_t at)
{
	if (b->op == KRED__OP_CST && b->value == floor(b->value) && fabs(b->value) <= 1e6) {
		int k = (int)b->value;

		if (k == 2)
			return placed(p, kred__op1(p->g, KRED__OP_SQUARE, a, p->err), at);
		return placed(p, kred__opi(p->g, KRED__OP_POW, 1, &a, 1, &k, p->err), at);
	}
	return placed(p, kred__op2(p->g, KRED__OP_POWF, a, b, p->err), at);
}

static const struct kred__node *subexpr(struct parser *p, int limit)
{
	const struct kred__node *e;

	if (++p->depth > KRED__MAX_DEPTH) {
		kred__fail(p->err, KRED_EDEPTH, (long)p->start,
			   "formula nested deeper than %d levels", KRED__MAX_DEPTH);
		return NULL;
	}
	if (p->t == T_MINUS) {
		size_t at = p->start;

		next(p);
		e = subexpr(p, UNARY_PRIORITY);
		if (!e)
			return NULL;
		/* A negative literal is one constant, so that printed constants read back. */
		if (e->op == KRED__OP_CST)
			e = placed(p, kred__cst(p->g, -e->value, p->err), at);
		else
			e = placed(p, kred__op1(p->g, KRED__OP_MINUS, e, p->err), at);
	} else {
		e = simple(p);
	}
	while (e && p->t < sizeof(binop) / sizeof(binop[0]) && binop[p->t].left > limit) {
		enum tok t = p->t;
		size_t at = p->start;
		const struct kred__node *b;

		next(p);
		b = subexpr(p, binop[t].right);
		if (!b)
			return NULL;
		if (t == T_POW)
			e = power(p, e, b, at);
		else
			e = placed(p, kred__op2(p->g, binop[t].op, e, b, p->err), at);
	}
	p->depth--;
	return e;
}

kred_status kred__parse_formula(struct kred__graph *g, const char *src,
				const struct kred__node **out, struct kred__error *err)
{
	struct parser p = { .g = g, .src = src, .err = err, .what = "formula" };
	const struct kred__node *e;

	*out = NULL;
	next(&p);
	if (p.t == T_END)
		return kred__fail(err, KRED_ESYNTAX, 0, "empty formula");
	e = subexpr(&p, 0);
	if (!e) {
		if (err->status == KRED_OK) /* cannot happen, but never return NULL silently */
			kred__fail(err, KRED_ESYNTAX, (long)p.start, "invalid formula");
		return err->status;
	}
	if (p.t != T_END) {
		if (p.t == T_RPAR)
			return kred__fail(err, KRED_ESYNTAX, (long)p.start, "unbalanced ')'");
		syntax(&p, p.start, "expected an operator or the end of the formula");
		return err->status;
	}
	*out = e;
	return KRED_OK;
}

/* Names an alias may not take: the operations and the words of the language. */
static int reserved(const char *s, size_t len)
{
	static const char *const words[] = { "IntCst", "IntInv", "Ind" };

	if (kred__op_lookup(s, len) >= 0 || var_category(s, len) >= 0)
		return 1;
	for (size_t k = 0; k < sizeof(words) / sizeof(words[0]); k++)
		if (strlen(words[k]) == len && !memcmp(words[k], s, len))
			return 1;
	return 0;
}

kred_status kred__parse_alias(struct kred__graph *g, const char *src, int default_pos,
			      struct kred__error *err)
{
	struct parser p = { .g = g, .src = src, .err = err, .what = "alias" };
	size_t name_at, name_len, cat_at;
	int cat, v[3], n = 0, want;
	kred_status s;

	next(&p);
	if (p.t != T_NAME)
		return syntax(&p, p.start, "expected a variable name"), err->status;
	name_at = p.start;
	name_len = p.len;
	if (reserved(src + name_at, name_len))
		return kred__fail(err, KRED_EALIAS, (long)name_at,
				  "'%.*s' is a name of the language and cannot be a variable",
				  (int)name_len, src + name_at);
	next(&p);
	if (!accept(&p, T_ASSIGN))
		return syntax(&p, p.start, "expected '=' after the variable name"), err->status;
	cat_at = p.start;
	cat = p.t == T_NAME ? var_category(src + p.start, p.len) : -1;
	if (cat < 0)
		return kred__fail(err, KRED_EALIAS, (long)p.start,
				  "expected Vi, Vj, Vx, Vy, Pm or Var after '='");
	next(&p);
	if (!accept(&p, T_LPAR))
		return syntax(&p, p.start, "expected '('"), err->status;
	do {
		if (n == 3)
			return kred__fail(err, KRED_EARITY, (long)cat_at, "too many arguments");
		if (int_arg(&p, &v[n++]))
			return err->status;
	} while (accept(&p, T_COMMA));
	if (!accept(&p, T_RPAR))
		return syntax(&p, p.start, "expected ')'"), err->status;
	if (p.t != T_END)
		return syntax(&p, p.start, "expected the end of the alias"), err->status;
	want = cat == 3 ? 3 : 2;
	if (n == want - 1 && cat != 3) {
		/* NAME = Vi(DIM): the position is the alias's place in the list */
		v[1] = v[0];
		v[0] = default_pos;
	} else if (n != want) {
		return kred__fail(err, KRED_EARITY, (long)cat_at, "%s takes %s arguments, got %d",
				  cat == 3 ? "Var" : "this category",
				  cat == 3 ? "3 (POS, DIM, CAT)" : "1 (DIM) or 2 (POS, DIM)", n);
	}
	if (cat == 3)
		cat = v[2];
	if (v[0] < 0 || v[0] > 10000)
		return kred__fail(err, KRED_ERANGE, (long)cat_at, "position %d out of range", v[0]);
	if (v[1] < 1 || v[1] > KRED__MAX_DIM)
		return kred__fail(err, KRED_ERANGE, (long)cat_at, "dimension %d out of range "
				  "(1 to %d)", v[1], KRED__MAX_DIM);
	if (cat < 0 || cat > 2)
		return kred__fail(err, KRED_ERANGE, (long)cat_at,
				  "category %d out of range (0 = i, 1 = j, 2 = parameter)", cat);
	s = kred__graph_declare(g, src + name_at, name_len, v[0], v[1], cat, err);
	if (s && err->offset < 0)
		err->offset = (long)name_at;
	return s;
}
