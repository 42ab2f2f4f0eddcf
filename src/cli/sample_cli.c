/* `fspo sample --ckpt FILE --examples USER.jsonl --prompt TEXT`: one
 * personalized answer, conditioned on a user's few-shot preference pairs. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/ckpt.h"
#include "io/jsonl.h"
#include "src/cli/cli.h"
#include "src/cli/commands.h"
#include "src/frozen.h"
#include "src/generate.h"
#include "src/tokenizer.h"
#include "src/util.h"

static void usage(void)
{
    printf("usage: fspo sample --ckpt FILE --examples USER.jsonl --prompt TEXT [options]\n\n"
           "Generates an answer to TEXT personalized to the user whose preference pairs\n"
           "USER.jsonl holds (rows {\"prompt\", \"chosen\", \"rejected\"}, as fspo prep reads;\n"
           "user_id is required there too, other fields are ignored). The pairs become the\n"
           "few-shot context exactly as training renders it (example / question / preferred /\n"
           "dispreferred, then task / question), and the answer is decoded with a KV cache\n"
           "until end of answer or --max-tokens. The text goes to stdout; tokens/s to stderr.\n"
           "The same seed, checkpoint and inputs give the same text. Text is encoded and\n"
           "decoded with the checkpoint's tokenizer (the one of the dataset it was trained on,\n"
           "or a Hugging Face directory's tokenizer.json).\n\n"
           "  --ckpt FILE         checkpoint to sample from (ckpt_<step>.h5, or a Hugging Face\n"
           "                      Llama directory: docs/interop.md)\n"
           "  --examples FILE     the user's few-shot pairs, JSON lines (may be empty: N = 0)\n"
           "  --prompt TEXT       the question to answer\n"
           "  --seed S            random seed (default 1)\n"
           "  --temperature T     softmax temperature, 0 = greedy (default 0.7)\n"
           "  --top-p P           nucleus mass in (0, 1] (default 0.9)\n"
           "  --max-tokens N      generation limit (default 160)\n"
           "  --describe          for a model trained with data.user_desc: cot: first write the user's\n"
           "                      description (greedy, at most 128 tokens) after the pairs, show\n"
           "                      it on stderr, then answer with it in context\n"
           "  --desc TEXT         answer with this user description in context instead\n\n"
           "Exit codes: 0 done, 2 bad usage or input (missing checkpoint, malformed JSONL,\n"
           "a prompt that does not fit the model's context), 1 runtime failure.\n");
}

/* Text as the checkpoint's tokens. */
static TokSpan encode(const Tokenizer *tok, const char *s, size_t n)
{
    int32_t *ids = malloc(sizeof(int32_t) * (n ? n : 1));
    if (!ids) fatal(EXIT_RUNTIME, "sample: out of memory");
    return (TokSpan){ ids, tok_encode(tok, s, n, ids) };
}

/* Tokens as text, malloc'ed and NUL-terminated; *len its length. */
static char *decode(const Tokenizer *tok, const int32_t *ids, int n, size_t *len)
{
    *len = tok_decode(tok, ids, (size_t)n, NULL, 0, 0);
    char *text = malloc(*len + 1);
    if (!text) fatal(EXIT_RUNTIME, "sample: out of memory");
    tok_decode(tok, ids, (size_t)n, text, *len + 1, 0);
    return text;
}

/* Every row of the file, tokenized; the first bad line is an error. */
static PairSpans *read_examples(const Tokenizer *tok, const char *path, int *n_out)
{
    char err[1024];
    JsonlReader *r = jsonl_reader_open(path, 1 << 20, err, sizeof err);
    if (!r) fatal(EXIT_USAGE, "sample: --examples: %s", err);
    PairSpans *shots = NULL;
    int n = 0, cap = 0;
    PrefRow row;
    long line;
    int rc;
    while ((rc = jsonl_next_row(r, &row, &line, err, sizeof err)) == 1) {
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            shots = realloc(shots, sizeof *shots * (size_t)cap);
            if (!shots) fatal(EXIT_RUNTIME, "sample: out of memory");
        }
        shots[n].prompt = encode(tok, row.prompt, row.prompt_len);
        shots[n].chosen = encode(tok, row.chosen, row.chosen_len);
        shots[n].rejected = encode(tok, row.rejected, row.rejected_len);
        n++;
    }
    jsonl_reader_close(r);
    if (rc < 0) fatal(EXIT_USAGE, "sample: --examples: %s", err);
    *n_out = n;
    return shots;
}

/* --describe: the model writes the user's description after the pairs
 * (greedy, like fspo eval's eval.user_desc generated); shown on stderr. */
static TokSpan write_description(const Tokenizer *tok, Generator *g, const PairSpans *shots, int n_shots,
                                 int max_seq)
{
    enum { DESC_MAX = 128 };
    int32_t *ids = malloc(sizeof(int32_t) * ((size_t)max_seq + DESC_MAX));
    int32_t *desc = malloc(sizeof(int32_t) * DESC_MAX);
    if (!ids || !desc) fatal(EXIT_RUNTIME, "sample: out of memory");
    int n = sample_render_desc_prompt(tok, shots, n_shots, ids, max_seq);
    SampleConfig greedy = { 0.0, 1.0, DESC_MAX };
    SampleResult res;
    if (n < 0 || generate(g, ids, n, &greedy, 0, ids + max_seq, DESC_MAX, &res) != 0)
        fatal(EXIT_USAGE, "sample: the %d few-shot pair(s) leave no room in the model's context (model.max_seq %d) to "
                          "write a description", n_shots, max_seq);
    memcpy(desc, ids + max_seq, sizeof(int32_t) * (size_t)res.n_tokens);
    size_t len;
    char *shown = decode(tok, desc, res.n_tokens, &len);
    fprintf(stderr, "sample: user description (written by the model): %s\n", shown);
    free(shown);
    free(ids);
    return (TokSpan){ desc, (size_t)res.n_tokens };
}

int cmd_sample(int argc, char **argv)
{
    const char *cmd = "sample", *ckpt = NULL, *examples = NULL, *prompt = NULL;
    SampleConfig sc = { .temperature = 0.7, .top_p = 0.9, .max_new_tokens = 160 };
    long seed = 1;
    int describe = 0;
    const char *desc_text = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            usage();
            return EXIT_OK;
        } else if (!strcmp(a, "--ckpt")) ckpt = cli_str(cmd, argc, argv, &i);
        else if (!strcmp(a, "--examples")) examples = cli_str(cmd, argc, argv, &i);
        else if (!strcmp(a, "--prompt")) prompt = cli_str(cmd, argc, argv, &i);
        else if (!strcmp(a, "--seed")) seed = cli_int(cmd, argc, argv, &i, 0, 2147483647);
        else if (!strcmp(a, "--temperature")) sc.temperature = cli_double(cmd, argc, argv, &i, 0, 100);
        else if (!strcmp(a, "--top-p")) {
            sc.top_p = cli_double(cmd, argc, argv, &i, 0, 1);
            if (sc.top_p <= 0) fatal(EXIT_USAGE, "%s: --top-p must be above 0", cmd);
        } else if (!strcmp(a, "--max-tokens")) sc.max_new_tokens = cli_int(cmd, argc, argv, &i, 1, 1 << 20);
        else if (!strcmp(a, "--describe")) describe = 1;
        else if (!strcmp(a, "--desc")) desc_text = cli_str(cmd, argc, argv, &i);
        else fatal(EXIT_USAGE, "%s: unknown argument '%s' (see 'fspo sample --help')", cmd, a);
    }
    if (!ckpt || !examples || !prompt)
        fatal(EXIT_USAGE, "%s: --ckpt, --examples and --prompt are required (see 'fspo sample --help')", cmd);
    if (!*prompt) fatal(EXIT_USAGE, "%s: --prompt is empty", cmd);
    if (describe && desc_text) fatal(EXIT_USAGE, "%s: --describe and --desc exclude each other", cmd);

    char err[1024];
    Model *m = frozen_load(ckpt, &(FrozenSpec){ .max_rows = 1, .max_len = 1 }, err, sizeof err);
    if (!m) fatal(EXIT_USAGE, "%s: %s", cmd, err);
    Tokenizer tok; /* the checkpoint's: prompts in, answers out */
    if (ckpt_read_tokenizer(ckpt, &tok, err, sizeof err) != 0) fatal(EXIT_USAGE, "%s: %s", cmd, err);
    if (tok_n_ids(&tok) > m->cfg.vocab)
        fatal(EXIT_USAGE, "%s: %s: tokenizer %s has %d ids, the model only %d", cmd, ckpt, tok_name(&tok),
              (int)tok_n_ids(&tok), m->cfg.vocab);
    int n_shots;
    PairSpans *shots = read_examples(&tok, examples, &n_shots);
    TokSpan query = encode(&tok, prompt, strlen(prompt));
    int max_seq = m->cfg.max_seq;
    Generator *g = generator_create(m, &tok);
    TokSpan desc = { NULL, 0 };
    if (desc_text) desc = encode(&tok, desc_text, strlen(desc_text));
    else if (describe) desc = write_description(&tok, g, shots, n_shots, max_seq);
    const TokSpan *dp = desc.ids ? &desc : NULL;
    size_t need = sample_prompt_len(&tok, shots, n_shots, dp, query);
    if (need >= (size_t)max_seq)
        fatal(EXIT_USAGE, "%s: the prompt with its %d few-shot pair(s) is %zu tokens; the model's context "
                          "(model.max_seq) is %d and must leave room for the answer: use fewer or shorter examples",
              cmd, n_shots, need, max_seq);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)max_seq * 2);
    if (!ids) fatal(EXIT_RUNTIME, "%s: out of memory", cmd);
    int n_prompt = sample_render_prompt(&tok, shots, n_shots, dp, query, ids, max_seq);
    int32_t *out = ids + max_seq;

    SampleResult res;
    generate(g, ids, n_prompt, &sc, (uint64_t)seed, out, max_seq, &res);
    size_t text_len;
    char *text = decode(&tok, out, res.n_tokens, &text_len);
    fwrite(text, 1, text_len, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    fprintf(stderr, "sample: %d few-shot pair(s), %d prompt tokens, %d generated (stop: %s) in %.2f s: %.0f tokens/s\n",
            n_shots, n_prompt, res.n_tokens, sample_stop_name(res.stop), res.seconds,
            (n_prompt + res.n_tokens) / (res.seconds > 0 ? res.seconds : 1e-9));

    free(text);
    free(ids);
    generator_free(g);
    model_free(m);
    for (int i = 0; i < n_shots; i++)
        free((void *)shots[i].prompt.ids), free((void *)shots[i].chosen.ids), free((void *)shots[i].rejected.ids);
    free(shots);
    free((void *)query.ids);
    free((void *)desc.ids);
    tok_free(&tok);
    return EXIT_OK;
}
