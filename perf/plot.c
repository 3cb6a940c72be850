/* SPDX-License-Identifier: MIT */
/* rdmae-perf --plot (rdmae_plot.h). */
#include <errno.h>
#include <inttypes.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "rdmae_plot.h"

extern char **environ;

/* FILE.png -> FILE.gp; anything else -> anything.gp. */
static char *script_path(const char *png)
{
	size_t n = strlen(png);
	char *s = malloc(n + 4);

	if (!s)
		return NULL;
	if (n > 4 && !strcmp(png + n - 4, ".png"))
		n -= 4;
	snprintf(s, n + 4, "%.*s.gp", (int)n, png);
	return s;
}

/* gnuplot single-quoted string: only the quote itself needs doubling. */
static void put_quoted(FILE *f, const char *s)
{
	fputc('\'', f);
	for (; *s; s++) {
		if (*s == '\'')
			fputc('\'', f);
		fputc(*s, f);
	}
	fputc('\'', f);
}

static int write_script(const char *gp, const char *png, const char *title,
			const struct rdmae_plot_round *r, size_t n, struct rdmae_err *err)
{
	FILE *f = fopen(gp, "we");
	size_t i;
	int bad;

	if (!f)
		return rdmae_err_set(err, -errno, "plot script %s: %s", gp, strerror(errno));
	fputs("# rdmae-perf migrate: per-round figures (gnuplot script, data inline)\n", f);
	fputs("$rounds << EOD\n# round MiB_sent bandwidth_MB/s dirty_MB/s final\n", f);
	for (i = 0; i < n; i++)
		fprintf(f, "%u %.3f %.3f %.3f %d\n", r[i].round, (double)r[i].bytes / 1048576.0,
			r[i].bandwidth / 1e6, r[i].dirty_rate / 1e6, r[i].final);
	fputs("EOD\n", f);
	/* The libgd png terminal: it needs no font configuration, which a bare VM lacks. */
	fputs("set terminal png size 900,720\nset output ", f);
	put_quoted(f, png);
	fputs("\nset multiplot layout 2,1 title ", f);
	put_quoted(f, title);
	/* Both panels on the same axis: a round lines up with its bar. */
	fprintf(f, "\nset xrange [0.5:%u.5]", n ? r[n - 1].round : 1);
	fputs("\nset lmargin at screen 0.09\nset rmargin at screen 0.75"
	      "\nset grid\nset xlabel 'round'\nset xtics 1\nset key outside right\n"
	      "set style fill solid 0.6\nset boxwidth 0.6\n"
	      "set ylabel 'MiB'\nset yrange [0:*]\n"
	      "plot $rounds using 1:($5 == 0 ? $2 : 1/0) with boxes title 'sent (pre-copy)', \\\n"
	      "     $rounds using 1:($5 != 0 ? $2 : 1/0) with boxes title 'sent (final)'\n"
	      "set ylabel 'MB/s'\n"
	      "plot $rounds using 1:3 with linespoints title 'bandwidth', \\\n"
	      "     $rounds using 1:4 with linespoints title 'dirty rate'\n"
	      "unset multiplot\n", f);
	bad = ferror(f);
	bad |= fclose(f) != 0;
	if (bad)
		return rdmae_err_set(err, -EIO, "plot script %s: write failed", gp);
	return 0;
}

int rdmae_plot_rounds(const char *png, const char *title, const struct rdmae_plot_round *r,
		      size_t n, struct rdmae_err *err)
{
	char *gp = script_path(png);
	char *argv[3];
	pid_t pid;
	int ret, st;

	if (!gp)
		return rdmae_err_set(err, -ENOMEM, "plot %s: out of memory", png);
	ret = write_script(gp, png, title, r, n, err);
	if (ret)
		goto out;
	argv[0] = "gnuplot";
	argv[1] = gp;
	argv[2] = NULL;
	ret = posix_spawnp(&pid, "gnuplot", NULL, NULL, argv, environ);
	if (ret) {
		ret = rdmae_err_set(err, -ret, "plot %s: cannot run gnuplot (%s); the script is "
				    "%s: run \"gnuplot %s\" where gnuplot is installed", png,
				    strerror(ret), gp, gp);
		goto out;
	}
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR) {
			ret = rdmae_err_set(err, -errno, "plot %s: waiting for gnuplot: %s", png,
					    strerror(errno));
			goto out;
		}
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		ret = rdmae_err_set(err, -EIO, "plot %s: gnuplot %s failed (status 0x%x)", png, gp,
				    st);
out:
	free(gp);
	return ret;
}
