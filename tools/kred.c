/* The kred command: runs a reduction or its gradient on .npy files, prints generated
 * kernel sources and the devices found. DESIGN.md, "The command line", is its spec. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "kernel_product_cmd.h"
#include "kred.h"
#include "npy.h"

/* Exit statuses: 0 done, 1 any error but a usage error, 2 a usage error. */
#define EXIT_USAGE 2

/* Indexed by the category kred_reduction_arg returns. */
static const char *const cat_name[] = { "Vi", "Vj", "Pm" };

/* The name that binds the cotangent of `kred grad` when the library gives that
 * argument no name of its own. */
#define GRAD_OUT "GRAD_OUT"

struct input {
	char *name;	  /* NAME of -i NAME=FILE (owned) */
	const char *path; /* FILE, in argv */
	struct npy_array a;
	bool bound;
};

/* One argument position of the reduction that is run. */
struct slot {
	int cat, dim;
	const char *name;    /* alias name, GRAD_OUT, or "" */
	struct input *in;    /* the file bound to it; NULL for a computed argument */
	bool computed;	     /* the forward output that `grad` feeds its gradient */
	int64_t rows;	     /* rows of a Vi / Vj input */
};

struct cli {
	const char *cmd; /* "run", "grad", "source" or "compile" */
	const char *var; /* the variable of grad */
	const char *formula, *weight, *reduction, *output, *backend;
	const char *arch; /* --arch of compile */
	const char **aliases;
	size_t n_aliases;
	struct input *inputs;
	size_t n_inputs;
	kred_axis axis;
	bool have_axis, have_dtype, have_sum, have_scheme, time, fast_math;
	kred_dtype dtype;
	kred_sum_scheme sum_scheme;
	kred_scheme scheme; /* 1D / 2D of the GPU backends */
	int64_t nx, ny; /* from --nx / --ny, -1 when not given */
	int64_t device_memory; /* --device-memory, 0 when not given */

	kred_context *ctx;
	kred_reduction *fwd, *grad;
	struct slot *slots;
	int n_slots;
	void *fwd_out, *out;
	double t_compile, t_run;
};

static void error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void error(const char *fmt, ...)
{
	va_list ap;

	fputs("kred: error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* A library error: kred_errmsg says it best (for a formula error it holds the formula
 * and a caret line), so it goes out verbatim. */
static int lib_error(const kred_context *ctx, kred_status st)
{
	const char *msg = kred_errmsg(ctx);
	size_t len;
	const char *v;

	if (!msg || !*msg)
		msg = kred_status_message(st);
	len = strlen(msg);
	fprintf(stderr, "kred: error: %s%s", msg, len && msg[len - 1] == '\n' ? "" : "\n");
	if (st == KRED_EBUILD) {
		/* The log can be long; it is printed only on request, so that an error
		 * stays one line by default. */
		v = getenv("KRED_VERBOSE");
		if (v && *v && strcmp(v, "0") != 0)
			fputs(kred_error_log(ctx), stderr);
	}
	return EXIT_FAILURE;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *f)
{
	fputs("usage: kred run FORMULA -a ALIAS... -r REDUCTION -i NAME=FILE... -o OUT.npy [options]\n"
	      "       kred grad VAR FORMULA -a ALIAS... -r REDUCTION -i NAME=FILE...\n"
	      "                 -i GRAD_OUT=FILE -o OUT.npy [options]\n"
	      "       kred source FORMULA -a ALIAS... -r REDUCTION [-b BACKEND] [--dtype T]\n"
	      "       kred compile FORMULA -a ALIAS... -r REDUCTION [-b cuda[:N]] [--arch sm_80]\n"
	      "                 [--dtype T] [-o OUT.ptx]\n"
	      "       kred devices\n"
	      "       kred bench ...\n"
	      "       kred kernel-product KERNEL [--mode M] --gamma FILE|none... --x FILE...\n"
	      "                 --y FILE... [--b --u --v --c --h --s --t FILE] -o OUT.npy\n"
	      "       kred --version\n"
	      "       kred help\n"
	      "\n"
	      "run     computes out_i = REDUCTION_j FORMULA(...) and writes it to OUT.npy\n"
	      "        (nx x out_dim; ny x out_dim with --axis i)\n"
	      "grad    writes the gradient with respect to VAR (an alias or #POS), shaped as\n"
	      "        VAR's input; GRAD_OUT is the cotangent, shaped as run's output\n"
	      "source  prints the kernel source generated for the backend\n"
	      "compile prints (or writes to -o) the PTX that NVRTC makes of the CUDA source,\n"
	      "        for --arch (default: the GPU's, else the oldest NVRTC knows); needs\n"
	      "        NVRTC, not a GPU\n"
	      "devices lists every backend, its devices, and why one is missing\n"
	      "bench   runs the standard benchmark cases\n"
	      "kernel-product  a KeOps kernel_product: kernels by name, in one of 8 modes\n"
	      "\n"
	      "options:\n"
	      "  -a, --alias 'X=Vi(3)'      declare a variable (Vi, Vj or Pm); repeat\n"
	      "  -w, --weight G             the weight formula of the ...Weight reductions\n"
	      "  -r, --reduction NAME       Sum, LogSumExp, Min, ArgMin, KMin(K), ...\n"
	      "  --axis j|i                 reduce over j (default) or over i\n"
	      "  -i, --input NAME=FILE      bind an argument, by alias name or '#POS', to a .npy\n"
	      "                             file: Vi / Vj inputs are (rows, dim), a Pm is 1-D\n"
	      "  -o, --output FILE          the .npy file to write\n"
	      "  -b, --backend B            auto, reference, host, opencl[:N], cuda[:N],\n"
	      "                             vulkan[:N] (default $KRED_BACKEND, else auto);\n"
	      "                             opencl:all, cuda:all, vulkan:all: every device\n"
	      "  --dtype float32|float64    convert the inputs to this type (default: the\n"
	      "                             inputs' common type; float64 with no inputs)\n"
	      "  --sum-scheme direct|block|kahan   summation of Sum-like reductions\n"
	      "  --fast-math                the backend's fast math functions (less accurate;\n"
	      "                             see kred.h)\n"
	      "  --scheme 1d|2d|auto        the GPU backends' launch scheme (default auto)\n"
	      "  --device-memory BYTES      at most this much device memory per run (K, M, G\n"
	      "                             suffixes): larger inputs go through in chunks\n"
	      "  --arch sm_80               compile: the CUDA architecture\n"
	      "  --nx N, --ny N             sizes when the formula has no Vi / no Vj variable\n"
	      "  --time                     print compile and run seconds on stderr\n"
	      "  --                         the rest is positional (for a formula such as '-G'\n"
	      "                             that reads as an option; '-G*X' needs no --)\n"
	      "\n"
	      "Exit status: 0 done, 1 error, 2 usage error.\n",
	      f);
}

/* ---- command line ---- */

enum opt_id {
	OPT_ALIAS,
	OPT_WEIGHT,
	OPT_REDUCTION,
	OPT_AXIS,
	OPT_INPUT,
	OPT_OUTPUT,
	OPT_BACKEND,
	OPT_DTYPE,
	OPT_SUM,
	OPT_SCHEME,
	OPT_ARCH,
	OPT_NX,
	OPT_NY,
	OPT_TIME,
	OPT_FAST,
	OPT_MEMORY,
	OPT_HELP
};

static const struct opt_def {
	const char *shrt, *lng;
	enum opt_id id;
	bool value;
} opt_defs[] = {
	{ "-a", "--alias", OPT_ALIAS, true },
	{ "-w", "--weight", OPT_WEIGHT, true },
	{ "-r", "--reduction", OPT_REDUCTION, true },
	{ NULL, "--axis", OPT_AXIS, true },
	{ "-i", "--input", OPT_INPUT, true },
	{ "-o", "--output", OPT_OUTPUT, true },
	{ "-b", "--backend", OPT_BACKEND, true },
	{ NULL, "--dtype", OPT_DTYPE, true },
	{ NULL, "--sum-scheme", OPT_SUM, true },
	{ NULL, "--scheme", OPT_SCHEME, true },
	{ NULL, "--arch", OPT_ARCH, true },
	{ NULL, "--nx", OPT_NX, true },
	{ NULL, "--ny", OPT_NY, true },
	{ NULL, "--time", OPT_TIME, false },
	{ NULL, "--fast-math", OPT_FAST, false },
	{ NULL, "--device-memory", OPT_MEMORY, true },
	{ "-h", "--help", OPT_HELP, false },
};

/* Finds arg's option. *value is set to an attached value ("--axis=i"), or NULL when the
 * value, if any, is the next argument. Short options take no attached value, so that
 * "-a..." can never swallow a formula. */
static const struct opt_def *find_opt(const char *arg, const char **value)
{
	size_t n = sizeof(opt_defs) / sizeof(opt_defs[0]);

	*value = NULL;
	for (size_t k = 0; k < n; k++) {
		const struct opt_def *o = &opt_defs[k];
		size_t len = strlen(o->lng);

		if (strcmp(arg, o->lng) == 0 || (o->shrt && strcmp(arg, o->shrt) == 0))
			return o;
		if (o->value && strncmp(arg, o->lng, len) == 0 && arg[len] == '=') {
			*value = arg + len + 1;
			return o;
		}
	}
	return NULL;
}

/* Sets a single-valued option; giving it twice is a usage error, since which one
 * should win is a guess. */
static int set_once(const char **slot, const char *value, const char *arg)
{
	if (*slot) {
		error("%s given twice (see 'kred help')", arg);
		return EXIT_USAGE;
	}
	*slot = value;
	return 0;
}

static int parse_size(const char *s, int64_t *out, const char *arg)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (*out >= 0) {
		error("%s given twice", arg);
		return EXIT_USAGE;
	}
	if (errno || end == s || *end || v < 0) {
		error("%s wants a non-negative integer, not '%s'", arg, s);
		return EXIT_USAGE;
	}
	*out = v;
	return 0;
}

static int parse_option(struct cli *c, const struct opt_def *o, const char *arg,
			const char *v)
{
	switch (o->id) {
	case OPT_ALIAS:
		c->aliases[c->n_aliases++] = v;
		return 0;
	case OPT_WEIGHT:
		return set_once(&c->weight, v, arg);
	case OPT_REDUCTION:
		return set_once(&c->reduction, v, arg);
	case OPT_OUTPUT:
		return set_once(&c->output, v, arg);
	case OPT_BACKEND:
		return set_once(&c->backend, v, arg);
	case OPT_INPUT: {
		const char *eq = strchr(v, '=');
		struct input *in = &c->inputs[c->n_inputs];

		if (!eq || eq == v || !eq[1]) {
			error("%s wants NAME=FILE, not '%s'", arg, v);
			return EXIT_USAGE;
		}
		in->name = strndup(v, (size_t)(eq - v));
		if (!in->name) {
			error("out of memory");
			return EXIT_FAILURE;
		}
		in->path = eq + 1;
		c->n_inputs++;
		return 0;
	}
	case OPT_AXIS:
		if (c->have_axis) {
			error("%s given twice", arg);
			return EXIT_USAGE;
		}
		if (strcmp(v, "j") && strcmp(v, "i")) {
			error("%s wants j or i, not '%s'", arg, v);
			return EXIT_USAGE;
		}
		c->have_axis = true;
		c->axis = strcmp(v, "i") == 0 ? KRED_REDUCE_I : KRED_REDUCE_J;
		return 0;
	case OPT_DTYPE:
		if (c->have_dtype) {
			error("%s given twice", arg);
			return EXIT_USAGE;
		}
		if (strcmp(v, "float32") && strcmp(v, "float64")) {
			error("%s wants float32 or float64, not '%s'", arg, v);
			return EXIT_USAGE;
		}
		c->have_dtype = true;
		c->dtype = strcmp(v, "float32") == 0 ? KRED_FLOAT32 : KRED_FLOAT64;
		return 0;
	case OPT_SUM:
		if (c->have_sum) {
			error("%s given twice", arg);
			return EXIT_USAGE;
		}
		if (strcmp(v, "direct") == 0)
			c->sum_scheme = KRED_SUM_DIRECT;
		else if (strcmp(v, "block") == 0)
			c->sum_scheme = KRED_SUM_BLOCK;
		else if (strcmp(v, "kahan") == 0)
			c->sum_scheme = KRED_SUM_KAHAN;
		else {
			error("%s wants direct, block or kahan, not '%s'", arg, v);
			return EXIT_USAGE;
		}
		c->have_sum = true;
		return 0;
	case OPT_SCHEME:
		if (c->have_scheme) {
			error("%s given twice", arg);
			return EXIT_USAGE;
		}
		if (strcmp(v, "1d") == 0)
			c->scheme = KRED_SCHEME_1D;
		else if (strcmp(v, "2d") == 0)
			c->scheme = KRED_SCHEME_2D;
		else if (strcmp(v, "auto") == 0)
			c->scheme = KRED_SCHEME_AUTO;
		else {
			error("%s wants 1d, 2d or auto, not '%s'", arg, v);
			return EXIT_USAGE;
		}
		c->have_scheme = true;
		return 0;
	case OPT_ARCH:
		if (strcmp(c->cmd, "compile") != 0) {
			error("%s is an option of kred compile", arg);
			return EXIT_USAGE;
		}
		return set_once(&c->arch, v, arg);
	case OPT_NX:
		return parse_size(v, &c->nx, arg);
	case OPT_NY:
		return parse_size(v, &c->ny, arg);
	case OPT_TIME:
		c->time = true;
		return 0;
	case OPT_FAST:
		c->fast_math = true;
		return 0;
	case OPT_MEMORY: {
		/* bytes, or with a K, M or G suffix */
		char *end;
		long long bytes;
		int shift = 0;

		if (c->device_memory) {
			error("%s given twice", arg);
			return EXIT_USAGE;
		}
		errno = 0;
		bytes = strtoll(v, &end, 10);
		if (end != v && *end && !end[1] && strchr("kKmMgG", *end)) {
			shift = *end == 'k' || *end == 'K' ? 10 : *end == 'm' || *end == 'M' ? 20 : 30;
			end++;
		}
		if (errno || end == v || *end || bytes <= 0 || bytes > (LLONG_MAX >> shift)) {
			error("%s wants a number of bytes (or with K, M, G), not '%s'", arg, v);
			return EXIT_USAGE;
		}
		c->device_memory = bytes << shift;
		return 0;
	}
	case OPT_HELP:
		break;
	}
	return 0;
}

/* Parses argv[0..argc-1], the words after the subcommand. Returns 0, or an exit
 * status; -1 when help was asked for. */
static int parse_args(struct cli *c, int argc, char **argv)
{
	int n_pos = 0, want_pos = strcmp(c->cmd, "grad") == 0 ? 2 : 1;
	const char *pos[2] = { NULL, NULL };
	bool rest_positional = false;
	int rc;

	c->aliases = calloc((size_t)argc + 1, sizeof(*c->aliases));
	c->inputs = calloc((size_t)argc + 1, sizeof(*c->inputs));
	if (!c->aliases || !c->inputs) {
		error("out of memory");
		return EXIT_FAILURE;
	}
	for (int k = 0; k < argc; k++) {
		const char *arg = argv[k], *v;
		const struct opt_def *o;

		/* KeOps formulas often start with a minus ("-G*SqDist(X,Y)"): only "--word"
		 * and "-x" look like options; anything else is positional. */
		bool optlike = arg[0] == '-' && ((arg[1] == '-' && arg[2]) ||
						 (isalpha((unsigned char)arg[1]) && !arg[2]));

		if (!rest_positional && strcmp(arg, "--") == 0) {
			rest_positional = true;
			continue;
		}
		if (rest_positional || !optlike) {
			if (n_pos == want_pos) {
				error("unexpected argument '%s' (see 'kred help')", arg);
				return EXIT_USAGE;
			}
			pos[n_pos++] = arg;
			continue;
		}
		o = find_opt(arg, &v);
		if (!o) {
			error("unknown option '%s' (see 'kred help'; put -- before a formula "
			      "such as '-G')",
			      arg);
			return EXIT_USAGE;
		}
		if (o->id == OPT_HELP) {
			usage(stdout);
			return -1;
		}
		if (o->value && !v) {
			if (k + 1 == argc) {
				error("option %s needs a value", arg);
				return EXIT_USAGE;
			}
			v = argv[++k];
		}
		rc = parse_option(c, o, arg, v);
		if (rc)
			return rc;
	}

	if (n_pos < want_pos) {
		if (want_pos == 2)
			error("grad needs a variable and a formula: kred grad VAR FORMULA ...");
		else
			error("%s needs a formula", c->cmd);
		return EXIT_USAGE;
	}
	if (want_pos == 2)
		c->var = pos[0];
	c->formula = pos[want_pos - 1];
	if (!c->reduction) {
		error("%s needs a reduction: -r Sum, -r LogSumExp, ...", c->cmd);
		return EXIT_USAGE;
	}
	if (strcmp(c->cmd, "source") == 0 || strcmp(c->cmd, "compile") == 0) {
		/* The kernel does not depend on the data: taking files here would only
		 * suggest that it does. compile's -o is where the PTX goes. */
		if (c->n_inputs || (c->output && c->cmd[0] == 's') || c->nx >= 0 || c->ny >= 0) {
			error("%s takes no -i%s, --nx or --ny (use --dtype to choose the type)",
			      c->cmd, c->cmd[0] == 's' ? ", -o" : "");
			return EXIT_USAGE;
		}
	} else if (!c->output) {
		error("%s needs an output file: -o OUT.npy", c->cmd);
		return EXIT_USAGE;
	}
	return 0;
}

/* ---- inputs ---- */

static const char *dtype_name(kred_dtype t)
{
	return t == KRED_FLOAT64 ? "float64" : "float32";
}

static size_t dtype_size(kred_dtype t)
{
	return t == KRED_FLOAT64 ? sizeof(double) : sizeof(float);
}

static int load_inputs(struct cli *c)
{
	char err[512];

	for (size_t k = 0; k < c->n_inputs; k++) {
		struct input *in = &c->inputs[k];

		if (npy_read(in->path, &in->a, err, sizeof(err)) != 0) {
			error("input %s: %s", in->name, err);
			return EXIT_FAILURE;
		}
	}
	return 0;
}

static int convert(struct input *in, kred_dtype to)
{
	size_t n = in->a.count;
	void *p;

	if (in->a.dtype == to)
		return 0;
	p = malloc(n ? n * dtype_size(to) : 1);
	if (!p) {
		error("out of memory converting %s (%s)", in->name, in->path);
		return EXIT_FAILURE;
	}
	if (to == KRED_FLOAT64)
		for (size_t k = 0; k < n; k++)
			((double *)p)[k] = ((const float *)in->a.data)[k];
	else
		for (size_t k = 0; k < n; k++)
			((float *)p)[k] = (float)((const double *)in->a.data)[k];
	free(in->a.data);
	in->a.data = p;
	in->a.dtype = to;
	return 0;
}

/* The computation's type: --dtype (inputs converted), else the inputs' common type.
 * When they differ, the odd one out is the first file of the less common type. */
static int choose_dtype(struct cli *c)
{
	size_t n64 = 0, odd = 0;
	kred_dtype major;

	if (c->have_dtype) {
		for (size_t k = 0; k < c->n_inputs; k++)
			if (convert(&c->inputs[k], c->dtype))
				return EXIT_FAILURE;
		return 0;
	}
	if (c->n_inputs == 0) {
		c->dtype = KRED_FLOAT64;
		return 0;
	}
	for (size_t k = 0; k < c->n_inputs; k++)
		n64 += c->inputs[k].a.dtype == KRED_FLOAT64;
	if (n64 == 0 || n64 == c->n_inputs) {
		c->dtype = c->inputs[0].a.dtype;
		return 0;
	}
	if (2 * n64 == c->n_inputs)
		major = c->inputs[0].a.dtype;
	else
		major = 2 * n64 > c->n_inputs ? KRED_FLOAT64 : KRED_FLOAT32;
	while (c->inputs[odd].a.dtype == major)
		odd++;
	for (size_t k = 0; k < c->n_inputs; k++) {
		if (c->inputs[k].a.dtype == major) {
			error("input %s (%s) is %s but %s (%s) is %s: give all inputs one type, "
			      "or pass --dtype",
			      c->inputs[odd].name, c->inputs[odd].path,
			      dtype_name(c->inputs[odd].a.dtype), c->inputs[k].name,
			      c->inputs[k].path, dtype_name(major));
			break;
		}
	}
	return EXIT_FAILURE;
}

/* ---- binding inputs to argument positions ---- */

/* "X = Vi(3)" or "#2 = Vj(3)", for messages. */
static void describe(const struct slot *s, int pos, char *buf, size_t len)
{
	if (s->name[0])
		snprintf(buf, len, "%s = %s(%d)", s->name, cat_name[s->cat], s->dim);
	else
		snprintf(buf, len, "#%d = %s(%d)", pos, cat_name[s->cat], s->dim);
}

static void shape_text(const struct npy_array *a, char *buf, size_t len)
{
	int n = snprintf(buf, len, "(");

	for (int k = 0; k < a->ndim && n > 0 && (size_t)n < len; k++)
		n += snprintf(buf + n, len - (size_t)n, "%s%" PRId64, k ? ", " : "", a->shape[k]);
	if (n > 0 && (size_t)n < len)
		snprintf(buf + n, len - (size_t)n, "%s)", a->ndim == 1 ? "," : "");
}

/* The slot an -i NAME binds, or -1. Names are alias names and "#POS"; n_user slots are
 * given by the user (the computed forward output of grad is not). */
static int find_slot(const struct cli *c, const char *name, int n_user)
{
	if (name[0] == '#') {
		char *end;
		long p;

		errno = 0;
		p = strtol(name + 1, &end, 10);
		if (!errno && end != name + 1 && !*end && p >= 0 && p < n_user)
			return (int)p;
		return -1;
	}
	for (int k = 0; k < n_user; k++)
		if (c->slots[k].name[0] && strcmp(c->slots[k].name, name) == 0)
			return k;
	return -1;
}

static int no_such_argument(const struct cli *c, const struct input *in, int n_user)
{
	char list[1024];
	size_t n = 0;

	list[0] = '\0';
	for (int k = 0; k < n_user && n < sizeof(list); k++) {
		int w;

		if (c->slots[k].name[0])
			w = snprintf(list + n, sizeof(list) - n, "%s%s", k ? ", " : "",
				     c->slots[k].name);
		else
			w = snprintf(list + n, sizeof(list) - n, "%s#%d", k ? ", " : "", k);
		if (w < 0)
			break;
		n += (size_t)w;
	}
	error("input %s (%s): the formula has no argument %s (its arguments: %s)", in->name,
	      in->path, in->name, n_user ? list : "none");
	return EXIT_FAILURE;
}

/* Fills c->slots from r's argument table and binds every input to one. For grad, r is
 * the gradient reduction: its argument n_fwd is the cotangent (bound by GRAD_OUT) and
 * an argument after it the forward output, which the command computes. */
static int bind_inputs(struct cli *c, const kred_reduction *r, int n_fwd)
{
	int n = kred_reduction_n_args(r), n_user = n;
	char what[256], shape[256];

	c->slots = calloc((size_t)n + 1, sizeof(*c->slots));
	if (!c->slots) {
		error("out of memory");
		return EXIT_FAILURE;
	}
	c->n_slots = n;
	for (int k = 0; k < n; k++) {
		struct slot *s = &c->slots[k];
		kred_status st = kred_reduction_arg(r, k, &s->cat, &s->dim, &s->name);

		if (st)
			return lib_error(c->ctx, st);
		if (!s->name)
			s->name = "";
		if (s->cat < 0 || s->cat > 2) {
			error("argument #%d has an unknown category %d", k, s->cat);
			return EXIT_FAILURE;
		}
	}
	if (c->grad) {
		if (n_fwd < n && !c->slots[n_fwd].name[0])
			c->slots[n_fwd].name = GRAD_OUT;
		for (int k = n_fwd + 1; k < n; k++)
			c->slots[k].computed = true;
		n_user = n_fwd + 1 < n ? n_fwd + 1 : n;
	}

	for (size_t k = 0; k < c->n_inputs; k++) {
		struct input *in = &c->inputs[k];
		int p = find_slot(c, in->name, n_user);
		struct slot *s;

		if (p < 0 && c->grad && strcmp(in->name, GRAD_OUT) == 0 && n_fwd < n)
			p = n_fwd;
		if (p < 0)
			return no_such_argument(c, in, n_user);
		s = &c->slots[p];
		if (s->in) {
			describe(s, p, what, sizeof(what));
			error("argument %s is given twice: -i %s=%s and -i %s=%s", what,
			      s->in->name, s->in->path, in->name, in->path);
			return EXIT_FAILURE;
		}
		s->in = in;
		in->bound = true;

		describe(s, p, what, sizeof(what));
		shape_text(&in->a, shape, sizeof(shape));
		if (s->cat == 2) {
			/* A 0-d array is what np.save writes for a plain number. */
			if (!((in->a.ndim == 1 && in->a.shape[0] == s->dim) ||
			      (in->a.ndim == 0 && s->dim == 1))) {
				error("input %s (%s) has shape %s but %s needs a 1-D array of %d "
				      "value%s",
				      in->name, in->path, shape, what, s->dim, s->dim == 1 ? "" : "s");
				return EXIT_FAILURE;
			}
		} else {
			if (in->a.ndim == 2 && in->a.shape[1] == s->dim)
				s->rows = in->a.shape[0];
			else if (in->a.ndim == 1 && s->dim == 1)
				s->rows = in->a.shape[0];
			else {
				error("input %s (%s) has shape %s but %s needs (rows, %d)", in->name,
				      in->path, shape, what, s->dim);
				return EXIT_FAILURE;
			}
		}
	}
	for (int k = 0; k < n_user; k++) {
		if (!c->slots[k].in) {
			describe(&c->slots[k], k, what, sizeof(what));
			if (c->slots[k].name[0])
				error("no input for argument %s: give -i %s=FILE", what,
				      c->slots[k].name);
			else
				error("no input for argument %s: give -i '#%d=FILE'", what, k);
			return EXIT_FAILURE;
		}
	}
	return 0;
}

/* nx from the Vi inputs, ny from the Vj inputs; they must agree within a category. */
static int find_size(struct cli *c, int cat, int64_t *size)
{
	const struct slot *first = NULL;
	const char *opt = cat == 0 ? "--nx" : "--ny";
	int64_t given = cat == 0 ? c->nx : c->ny;

	for (int k = 0; k < c->n_slots; k++) {
		const struct slot *s = &c->slots[k];

		if (s->cat != cat || !s->in)
			continue;
		if (!first) {
			first = s;
			continue;
		}
		if (s->rows != first->rows) {
			error("input %s (%s) has %" PRId64 " rows but %s (%s) has %" PRId64
			      ": every %s input needs the same number of rows",
			      first->in->name, first->in->path, first->rows, s->in->name,
			      s->in->path, s->rows, cat_name[cat]);
			return EXIT_FAILURE;
		}
	}
	if (first && given >= 0 && given != first->rows) {
		error("%s %" PRId64 " but input %s (%s) has %" PRId64 " rows", opt, given,
		      first->in->name, first->in->path, first->rows);
		return EXIT_FAILURE;
	}
	if (!first && given < 0) {
		error("the formula has no %s input to give its size: pass %s N", cat_name[cat], opt);
		return EXIT_FAILURE;
	}
	*size = first ? first->rows : given;
	return 0;
}

/* rows x dim values of the computation's type, allocated, with overflow checked. */
static void *alloc_values(const struct cli *c, int64_t rows, int dim)
{
	size_t size = dtype_size(c->dtype);

	if (rows < 0 || dim < 0 || (uint64_t)rows > SIZE_MAX / size ||
	    (dim && (size_t)rows > SIZE_MAX / size / (size_t)dim))
		return NULL;
	return malloc((size_t)rows * (size_t)dim * size + 1);
}

/* ---- commands ---- */

static int create(struct cli *c)
{
	kred_context_options opt = { .struct_size = sizeof(opt), .backend = c->backend,
				     .scheme = c->scheme, .device_memory = c->device_memory };
	kred_spec spec = {
		.formula = c->formula,
		.weight = c->weight,
		.aliases = c->aliases,
		.n_aliases = c->n_aliases,
		.reduction = c->reduction,
		.axis = c->axis,
		.dtype = c->dtype,
		.sum_scheme = c->sum_scheme,
	};
	kred_reduction_options ropt = { .struct_size = sizeof(ropt),
					.fast_math = c->fast_math ? KRED_FAST_MATH_ON
								  : KRED_FAST_MATH_DEFAULT };
	kred_status st;
	double t0;

	st = kred_context_create(&opt, &c->ctx);
	if (st)
		return lib_error(c->ctx, st);
	t0 = now();
	st = kred_reduction_create_ex(c->ctx, &spec, &ropt, &c->fwd);
	if (!st && c->var)
		st = kred_reduction_grad(c->fwd, c->var, &c->grad);
	c->t_compile += now() - t0;
	if (st)
		return lib_error(c->ctx, st);
	return 0;
}

/* Runs r on nx, ny; rows x out_dim values land in *out. */
static int run_one(struct cli *c, kred_reduction *r, int64_t nx, int64_t ny,
		   const void *const *args, int64_t rows, void **out)
{
	int dim = kred_reduction_out_dim(r);
	kred_status st;
	double t0;

	*out = alloc_values(c, rows, dim);
	if (!*out) {
		error("the output (%" PRId64 " x %d) is too large", rows, dim);
		return EXIT_FAILURE;
	}
	t0 = now();
	st = kred_reduction_run(r, nx, ny, args, *out);
	c->t_run += now() - t0;
	if (st)
		return lib_error(c->ctx, st);
	return 0;
}

static int write_output(const struct cli *c, int ndim, const int64_t *shape, const void *data)
{
	char err[512];

	if (npy_write(c->output, c->dtype, ndim, shape, data, err, sizeof(err)) != 0) {
		error("output: %s", err);
		return EXIT_FAILURE;
	}
	return 0;
}

/* run and grad: load, bind, run, write. */
static int compute(struct cli *c)
{
	int n_fwd, rc, ndim;
	int64_t nx, ny, fwd_rows, shape[2];
	const void **args = NULL;

	rc = load_inputs(c);
	if (!rc)
		rc = choose_dtype(c);
	if (!rc)
		rc = create(c);
	if (rc)
		return rc;
	n_fwd = kred_reduction_n_args(c->fwd);
	rc = bind_inputs(c, c->grad ? c->grad : c->fwd, n_fwd);
	if (!rc)
		rc = find_size(c, 0, &nx);
	if (!rc)
		rc = find_size(c, 1, &ny);
	if (rc)
		return rc;

	args = calloc((size_t)c->n_slots + 1, sizeof(*args));
	if (!args) {
		error("out of memory");
		return EXIT_FAILURE;
	}
	for (int k = 0; k < c->n_slots; k++)
		args[k] = c->slots[k].in ? c->slots[k].in->a.data : NULL;
	fwd_rows = c->axis == KRED_REDUCE_J ? nx : ny;

	if (!c->grad) {
		rc = run_one(c, c->fwd, nx, ny, args, fwd_rows, &c->out);
		shape[0] = fwd_rows;
		shape[1] = kred_reduction_out_dim(c->fwd);
		ndim = 2;
	} else {
		/* The gradients of the LogSumExp family, Min, Max and KMin take the forward
		 * output as their last argument: compute it first. */
		const struct slot *v;
		int p, dim = kred_reduction_out_dim(c->grad);
		int64_t rows;

		if (c->n_slots > n_fwd + 1) {
			rc = run_one(c, c->fwd, nx, ny, args, fwd_rows, &c->fwd_out);
			if (rc)
				goto out;
			args[n_fwd + 1] = c->fwd_out;
		}
		p = find_slot(c, c->var, n_fwd);
		if (p < 0) {
			/* kred_reduction_grad accepted a name this command cannot place. */
			error("cannot tell the shape of the gradient with respect to %s", c->var);
			rc = EXIT_FAILURE;
			goto out;
		}
		v = &c->slots[p];
		rows = v->cat == 0 ? nx : v->cat == 1 ? ny : 1;
		rc = run_one(c, c->grad, nx, ny, args, rows, &c->out);
		/* The gradient has the shape of VAR's input file. */
		ndim = v->in->a.ndim;
		if (v->cat == 2) {
			shape[0] = dim;
		} else {
			shape[0] = rows;
			shape[1] = dim;
		}
	}
	if (!rc)
		rc = write_output(c, ndim, shape, c->out);
	if (!rc && c->time)
		fprintf(stderr, "kred: compile %.3f s, run %.3f s\n", c->t_compile, c->t_run);
out:
	free(args);
	return rc;
}

static int source(struct cli *c)
{
	const char *src;
	size_t len;
	int rc;

	if (!c->have_dtype)
		c->dtype = KRED_FLOAT64;
	rc = create(c);
	if (rc)
		return rc;
	src = kred_reduction_source(c->fwd);
	if (!src)
		return lib_error(c->ctx, KRED_EINVAL);
	len = strlen(src);
	fputs(src, stdout);
	if (!len || src[len - 1] != '\n')
		fputc('\n', stdout);
	if (c->time)
		fprintf(stderr, "kred: compile %.3f s\n", c->t_compile);
	return 0;
}

/* The PTX of the CUDA source, on stdout or in the -o file. */
static int compile_ptx(struct cli *c)
{
	char *ptx = NULL;
	kred_status st;
	FILE *f;
	int rc;
	bool ok;

	char arch_backend[64];

	if (!c->have_dtype)
		c->dtype = KRED_FLOAT64;
	/* PTX for a named architecture needs NVRTC, not a GPU: "cuda" with --arch is the
	 * compile-only context of that architecture, the same with a GPU and without. */
	if (c->arch && (!c->backend || !strcmp(c->backend, "cuda"))) {
		bool named = !strncmp(c->arch, "sm_", 3) || !strncmp(c->arch, "compute_", 8);
		bool number = c->arch[0] && strspn(c->arch, "0123456789") == strlen(c->arch);

		/* anything else is left to kred_reduction_ptx, which says what it takes */
		if (named || number) {
			snprintf(arch_backend, sizeof(arch_backend), "cuda:%s%s",
				 named ? "" : "sm_", c->arch);
			c->backend = arch_backend;
		}
	}
	if (!c->backend)
		c->backend = "cuda";
	rc = create(c);
	if (rc)
		return rc;
	st = kred_reduction_ptx(c->fwd, c->arch, &ptx);
	if (st)
		return lib_error(c->ctx, st);
	f = c->output ? fopen(c->output, "w") : stdout;
	ok = f && fputs(ptx, f) != EOF;
	if (f && f != stdout)
		ok = fclose(f) == 0 && ok;
	if (!ok) {
		error("writing %s: %s", c->output ? c->output : "the PTX", strerror(errno));
		rc = EXIT_FAILURE;
	}
	kred_free(ptx);
	return rc;
}

static void cli_free(struct cli *c)
{
	for (size_t k = 0; k < c->n_inputs; k++) {
		free(c->inputs[k].name);
		npy_free(&c->inputs[k].a);
	}
	free(c->inputs);
	free((void *)c->aliases);
	free(c->slots);
	free(c->fwd_out);
	free(c->out);
	kred_reduction_destroy(c->grad);
	kred_reduction_destroy(c->fwd);
	kred_context_destroy(c->ctx);
}

/* Parses the words of a run, grad, source or compile command (argv[0] is the command's
 * name) into c, and runs nothing: 0, -1 when help was asked for, or an exit status.
 * Free c with cli_free either way. tests/fuzz/fuzz_cli.c calls it alone. */
static int parse_command(struct cli *c, int argc, char **argv)
{
	*c = (struct cli){ .cmd = argv[0], .nx = -1, .ny = -1 };
	return parse_args(c, argc - 1, argv + 1);
}

/* Every command gets its own name in argv[0]. run, grad and source share their
 * options. */
static int cmd_reduction(int argc, char **argv)
{
	const char *cmd = argv[0];
	struct cli c;
	int rc = parse_command(&c, argc, argv);

	if (rc == -1)
		rc = 0;
	else if (rc == 0)
		rc = strcmp(cmd, "source") == 0	   ? source(&c)
		     : strcmp(cmd, "compile") == 0 ? compile_ptx(&c)
						   : compute(&c);
	cli_free(&c);
	return rc;
}

static int cmd_devices(int argc, char **argv)
{
	char *report = NULL;
	kred_status st;

	if (argc > 1) {
		error("devices takes no arguments, not '%s'", argv[1]);
		return EXIT_USAGE;
	}
	st = kred_devices_report(&report);
	if (st) {
		error("%s", kred_status_message(st));
		return EXIT_FAILURE;
	}
	fputs(report, stdout);
	kred_free(report);
	return 0;
}

static int cmd_help(int argc, char **argv)
{
	(void)argc, (void)argv;
	usage(stdout);
	return 0;
}

static int cmd_version(int argc, char **argv)
{
	(void)argc, (void)argv;
	printf("kred %s\n", kred_version());
	return 0;
}

/* Every subcommand is one row; fn gets argv from the command's name on. */
static const struct command {
	const char *name;
	int (*fn)(int argc, char **argv);
} commands[] = {
	{ "run", cmd_reduction },
	{ "grad", cmd_reduction },
	{ "source", cmd_reduction },
	{ "compile", cmd_reduction },
	{ "devices", cmd_devices },
	{ "bench", kred_bench_main }, /* bench/bench.c */
	{ "kernel-product", kred_kernel_product_main }, /* tools/kernel_product_cmd.c */
	{ "help", cmd_help },
	{ "--help", cmd_help },
	{ "-h", cmd_help },
	{ "--version", cmd_version },
	{ "version", cmd_version },
};

/* The fuzz harness of the command line includes this file with KRED_CLI_NO_MAIN, to call
 * the parser without running anything. */
#ifndef KRED_CLI_NO_MAIN
int main(int argc, char **argv)
{
	size_t n = sizeof(commands) / sizeof(commands[0]);
	const struct command *cmd = NULL;
	int rc;

	if (argc < 2) {
		error("no command given (see 'kred help')");
		return EXIT_USAGE;
	}
	for (size_t k = 0; k < n && !cmd; k++)
		if (strcmp(argv[1], commands[k].name) == 0)
			cmd = &commands[k];
	if (!cmd) {
		error("unknown command '%s' (see 'kred help')", argv[1]);
		return EXIT_USAGE;
	}
	rc = cmd->fn(argc - 1, argv + 1);
	/* A full disk or a closed pipe shows up here, not in the printf calls. */
	if (fflush(stdout) != 0 || ferror(stdout)) {
		error("writing to standard output: %s", strerror(errno));
		return EXIT_FAILURE;
	}
	return rc;
}
#endif
