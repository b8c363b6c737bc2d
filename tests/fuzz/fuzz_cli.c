/* Fuzz harness of the kred command's argument parser (tools/kred.c, included here without
 * its main): an input is a command line, one word a line ("run", "Exp(-X)", "-a",
 * "X=Vi(3)", ...). The command is looked up as main does; the words of run, grad, source
 * and compile are parsed without running anything, and what the parser accepted must be
 * a complete command. devices is run only where it refuses its arguments; help and
 * --version run; bench and kernel-product, which have their own parsers and would run,
 * are left out. */
#define KRED_CLI_NO_MAIN
#include "kred.c"

#include "fuzz.h"

/* Never called: the commands table of kred.c names them, and the harness never runs
 * those commands (see above). */
int kred_bench_main(int argc, char **argv)
{
	(void)argc, (void)argv;
	abort();
}

int kred_kernel_product_main(int argc, char **argv)
{
	(void)argc, (void)argv;
	abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	fz_log_init();
	return 0;
}

/* What parse_command accepted. */
static void check_parsed(const struct cli *c, int argc)
{
	FZ_CHECK(c->formula && c->reduction, "no formula or no reduction");
	FZ_CHECK(strcmp(c->cmd, "grad") != 0 || c->var, "grad without its variable");
	FZ_CHECK(c->n_aliases <= (size_t)argc && c->n_inputs <= (size_t)argc,
		 "%zu aliases, %zu inputs from %d words", c->n_aliases, c->n_inputs, argc);
	for (size_t k = 0; k < c->n_aliases; k++)
		FZ_CHECK(c->aliases[k], "alias %zu is NULL", k);
	for (size_t k = 0; k < c->n_inputs; k++)
		FZ_CHECK(c->inputs[k].name && *c->inputs[k].name && c->inputs[k].path &&
				 *c->inputs[k].path,
			 "input %zu: an empty name or path", k);
	FZ_CHECK(c->device_memory >= 0 && c->nx >= -1 && c->ny >= -1, "sizes %lld %lld %lld",
		 (long long)c->device_memory, (long long)c->nx, (long long)c->ny);
	if (strcmp(c->cmd, "source") && strcmp(c->cmd, "compile"))
		FZ_CHECK(c->output, "%s without its output", c->cmd);
	FZ_CHECK(!c->arch || !strcmp(c->cmd, "compile"), "--arch outside compile");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fz_text(data, size), **argv;
	int argc = 1, rc;
	const struct command *cmd = NULL;

	if (!text)
		return 0;
	for (const char *s = text; *s; s++)
		argc += *s == '\n';
	argv = calloc((size_t)argc + 2, sizeof(*argv));
	if (!argv) {
		free(text);
		return 0;
	}
	/* argv[0] is the program; a last empty word (the input's final newline) is dropped */
	argv[0] = "kred";
	argc = 1;
	for (char *s = text, *next; s; s = next) {
		next = strchr(s, '\n');
		if (next)
			*next++ = '\0';
		if (*s || next)
			argv[argc++] = s;
	}
	argv[argc] = NULL;

	for (size_t k = 0; argc >= 2 && k < sizeof(commands) / sizeof(commands[0]) && !cmd; k++)
		if (strcmp(argv[1], commands[k].name) == 0)
			cmd = &commands[k];
	if (cmd && cmd->fn == cmd_reduction) {
		struct cli c;

		rc = parse_command(&c, argc - 1, argv + 1);
		FZ_CHECK(rc == 0 || rc == -1 || rc == EXIT_USAGE || rc == EXIT_FAILURE,
			 "parse: %d", rc);
		if (rc == 0)
			check_parsed(&c, argc);
		cli_free(&c);
	} else if (cmd && cmd->fn == cmd_devices && argc > 2) {
		FZ_CHECK(cmd_devices(argc - 1, argv + 1) == EXIT_USAGE, "devices with arguments");
	} else if (cmd && (cmd->fn == cmd_help || cmd->fn == cmd_version)) {
		FZ_CHECK(cmd->fn(argc - 1, argv + 1) == 0, "%s", cmd->name);
	}
	free(argv);
	free(text);
	return 0;
}
