/* `fspo bench`: training-step throughput on random tokens, against the
 * sgemm peak measured in the same process (the ceiling for MFU). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/config.h"
#include "src/batch.h"
#include "src/bf16.h"
#include "src/cli/bench.h"
#include "src/cli/cli.h"
#include "src/cli/commands.h"
#include "src/model.h"
#include "src/ops.h"
#include "src/optim.h"
#include "src/peak.h"
#include "src/pool.h"
#include "src/rng.h"
#include "src/util.h"

/* --precision NAME -> its PrecisionChoice (the name table of src/bf16.h) */
static PrecisionChoice precision_option(const char *name)
{
    for (int p = 0; PRECISION_CHOICE_NAMES[p]; p++)
        if (!strcmp(name, PRECISION_CHOICE_NAMES[p])) return (PrecisionChoice)p;
    fatal(EXIT_USAGE, "bench --precision: model.precision '%s': expected fp32, bf16 or auto", name);
}

int cmd_bench(int argc, char **argv)
{
    ModelConfig cfg = { .vocab = 264, .d_model = 256, .n_layers = 4, .n_heads = 4, .max_seq = 1024 };
    int batch = 4, steps = 5, threads = 0, json = 0, sgemm_n = 2048, recompute = 0;
    const char *precision = "fp32", *attention = "full";
    int extra = bench_extra(argc, argv);
    if (extra >= 0) return extra;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: fspo bench [options]\n\nTimes training steps (forward + backward + AdamW) on random "
                   "causal rows,\nafter measuring the sgemm peak at the same thread count; prints tokens/s and\n"
                   "MFU = achieved model FLOP/s / sgemm peak (FLOPs: see 'fspo model').\n\n"
                   "%s"
                   "  --steps N          timed steps after one warm-up step (default 5; median reported)\n"
                   "  --threads N        OpenBLAS threads (default: OPENBLAS_NUM_THREADS or OpenBLAS's own)\n"
                   "  --sgemm-n N        size of the square sgemm used for the peak (default 2048)\n"
                   "  --precision P      fp32 (default), bf16 or auto: model.precision of the steps; in bf16\n"
                   "                     MFU is against the bf16 product peak (same size and threads)\n"
                   "  --attention K      full (default) or flash (model.attention; fp32 only)\n"
                   "  --recompute        model.recompute: rerun each block's forward in the backward\n"
                   "  --json             one JSON object on stdout instead of text\n\n"
                   "Other rows of make bench (one JSON line each; see src/cli/bench_fspo.c):\n"
                   "  --pref DATA.h5 [--fewshot N --queries Q --examples K --dump FILE]\n"
                   "                     FSPO preference step per meta-example, tree-packed vs unshared rows\n"
                   "  --ckpt DIR         checkpoint save/load vs plain write+fsync/read of the same bytes\n"
                   "  --dp [--bucket-mb X] [--shard]\n"
                   "                     (under mpirun) allreduce time and the share hidden by the backward;\n"
                   "                     --shard: the ZeRO-1 reduce-scatter, and optimizer state per rank\n"
                   "  --allreduce-sweep  (under mpirun or srun) one allreduce of 4 KiB .. 64 MiB: the\n"
                   "                     alpha-beta fit of docs/scaling.md\n",
                   MODEL_SHAPE_HELP);
            return EXIT_OK;
        }
        if (model_shape_option("bench", argc, argv, &i, &cfg, &batch)) continue;
        if (!strcmp(argv[i], "--steps")) steps = cli_int("bench", argc, argv, &i, 1, 1000);
        else if (!strcmp(argv[i], "--threads")) threads = cli_int("bench", argc, argv, &i, 1, 1024);
        else if (!strcmp(argv[i], "--sgemm-n")) sgemm_n = cli_int("bench", argc, argv, &i, 64, 16384);
        else if (!strcmp(argv[i], "--precision")) precision = cli_str("bench", argc, argv, &i);
        else if (!strcmp(argv[i], "--attention")) attention = cli_str("bench", argc, argv, &i);
        else if (!strcmp(argv[i], "--recompute")) recompute = 1;
        else if (!strcmp(argv[i], "--json")) json = 1;
        else fatal(EXIT_USAGE, "bench: unknown option '%s' (see 'fspo bench --help')", argv[i]);
    }
    model_shape_check("bench", &cfg);
    char err[256];
    PrecisionChoice choice = precision_option(precision);
    int bf16 = bf16_resolve(choice, err, sizeof err);
    if (bf16 < 0) fatal(EXIT_USAGE, "bench --precision: %s", err);
    if (choice == PRECISION_CHOICE_AUTO) { /* say why, as fspo train's start-up line does */
        char why[200];
        bf16_auto(why, sizeof why); /* measured once: bf16_resolve's call kept the figures */
        fprintf(stderr, "bench: --precision auto: %s: %s\n", bf16 ? "bf16" : "fp32", why);
    }
    AttentionKind attn = !strcmp(attention, "flash") ? ATTENTION_FLASH : ATTENTION_FULL;
    if (strcmp(attention, "flash") && strcmp(attention, "full"))
        fatal(EXIT_USAGE, "bench --attention: '%s': expected full or flash", attention);
    if (attn == ATTENTION_FLASH && bf16)
        fatal(EXIT_USAGE, "bench --attention flash runs fp32 attention only: use --precision fp32");
    if (threads > 0) openblas_set_num_threads(threads);
    threads = openblas_get_num_threads();
    pool_set_threads(threads); /* the non-BLAS loops use as many threads as OpenBLAS */

    double sgemm_peak = peak_sgemm_gflops(sgemm_n, 7);
    /* MFU against the peak of the products the steps run */
    double bf16_peak = bf16 ? matmul_bf16_peak_gflops(sgemm_n, 7) : 0, peak = bf16 ? bf16_peak : sgemm_peak;
    int T = cfg.max_seq, N = batch * T;
    ActKeep keep = { attn, recompute };
    Model *m = model_create_keep(&cfg, 1, batch, T, keep);
    model_init_weights(m, 1234);
    char kernel[256] = "OpenBLAS sgemm";
    if (bf16) {
        model_set_precision(m, PRECISION_BF16);
        bf16_kernel_summary(kernel, sizeof kernel);
    }
    Batch b;
    float *logp, *dlogp;
    bench_lm_batch(&b, batch, T, &logp, &dlogp);
    OptimConfig oc = config_optim_default(OPTIM_ADAMW);
    Optimizer opt;
    optim_init(&opt, &oc, m->n_params);

    double times[1000], loss = 0;
    for (int s = -1; s < steps; s++) {
        double t0 = now_seconds();
        model_zero_grad(m);
        model_forward(m, &b, logp);
        model_backward(m, &b, dlogp);
        optim_step(&opt, m, 1e-3f);
        if (s >= 0) times[s] = now_seconds() - t0;
        loss = 0;
        for (int k = 0; k < b.n_targets; k++) loss -= logp[k];
        loss /= b.n_targets;
        if (!json) fprintf(stderr, "\rbench: step %d/%d  loss %.4f", s + 1, steps, loss);
    }
    if (!json) fprintf(stderr, "\n");
    double t = median(times, steps);
    /* peak RSS against what the design says the step needs */
    double analytic = 4.0 * m->n_params * 4 /* params, grads, AdamW m and v */ +
                      model_arena_bytes_keep(&cfg, 1, batch, T, keep) + m->bf16_bytes;
    double rss = bench_status_kb("VmHWM") * 1024.0;
    double tok_s = N / t, flops = model_flops_per_token(&cfg, T);
    double gflops = tok_s * flops / 1e9, mfu = gflops / peak;
    /* the same with attention counted as the causal half it really is */
    double flops_causal = flops - 6.0 * cfg.n_layers * (double)T * cfg.d_model;
    double mfu_causal = tok_s * flops_causal / 1e9 / peak;
    if (json)
        printf("{\"vocab\": %d, \"d_model\": %d, \"n_layers\": %d, \"n_heads\": %d, \"ffn_hidden\": %d, "
               "\"seq\": %d, \"batch\": %d, \"threads\": %d, \"params\": %zu, \"flops_per_token\": %.0f, "
               "\"step_s_median\": %.5f, \"tokens_per_s\": %.1f, \"model_gflops\": %.2f, "
               "\"sgemm_peak_gflops\": %.2f, \"mfu\": %.4f, \"mfu_causal\": %.4f, \"final_loss\": %.5f, "
               "\"rss_peak_mb\": %.1f, \"analytic_mb\": %.1f, \"rss_ratio\": %.3f, \"precision\": \"%s\", "
               "\"peak_gflops\": %.2f, \"bf16_peak_gflops\": %.2f, \"kernel\": \"%s\", \"attention\": \"%s\", \"recompute\": %s}\n",
               cfg.vocab, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.ffn_hidden, T, batch, threads, m->n_params,
               flops, t, tok_s, gflops, sgemm_peak, mfu, mfu_causal, loss, rss / 1048576, analytic / 1048576,
               rss / analytic, bf16 ? "bf16" : "fp32", peak, bf16_peak, kernel, ATTENTION_NAMES[attn], recompute ? "true" : "false");
    else
        printf("d_model %d, layers %d, heads %d, T %d, batch %d, %d thread(s), %s (%s): %.0f tokens/s, step %.3f s "
               "(median of %d), %.1f GFLOP/s model = %.1f%% of %s peak %.1f GFLOP/s (%.1f%% counting causal "
               "attention only)\n",
               cfg.d_model, cfg.n_layers, cfg.n_heads, T, batch, threads, bf16 ? "bf16" : "fp32", kernel, tok_s, t,
               steps, gflops, 100 * mfu, bf16 ? "bf16 product" : "sgemm", peak, 100 * mfu_causal);
    optim_free(&opt);
    free(logp);
    free(dlogp);
    batch_free(&b);
    model_free(m);
    return EXIT_OK;
}
