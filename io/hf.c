/* hf: Hugging Face Llama directories; see hf.h and docs/interop.md. */
#include "io/hf.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/safetensors.h"
#include "io/tokenizer_json.h"
#include "src/tokenizer.h"
#include "src/util.h"

int hf_is_dir(const char *path)
{
    struct stat st;
    char p[4200];
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return 0;
    snprintf(p, sizeof p, "%s/config.json", path);
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* ---- config.json ---- */

/* An integer key in [lo, hi]; absent (or null) gives def, or an error if def < 0 (required). */
static int get_int(json_t *root, const char *path, const char *key, long long def, long long lo, long long hi, int *out,
                   char *err, size_t errlen)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (def < 0) return set_err(err, errlen, "%s: %s missing", path, key);
        *out = (int)def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return set_err(err, errlen, "%s: %s must be an integer in [%lld, %lld]", path, key, lo, hi);
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_num(json_t *root, const char *path, const char *key, double def, double *out, char *err, size_t errlen)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_number(v) || !(json_number_value(v) > 0) || !isfinite(json_number_value(v)))
        return set_err(err, errlen, "%s: %s must be a positive number", path, key);
    *out = json_number_value(v);
    return 0;
}

int hf_read_config(const char *dir, ModelConfig *c, char *err, size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) return set_err(err, errlen, "%s: line %d column %d: %s", path, je.line, je.column, je.text);
    int rc = 0;
    memset(c, 0, sizeof *c);
    if (!json_is_object(root)) rc = set_err(err, errlen, "%s: not a JSON object", path);
    json_t *arch = rc ? NULL : json_object_get(root, "architectures");
    if (rc == 0) {
        int llama = 0;
        char seen[200] = "";
        if (json_is_array(arch))
            for (size_t i = 0; i < json_array_size(arch); i++) {
                const char *a = json_string_value(json_array_get(arch, i));
                llama |= a && !strcmp(a, "LlamaForCausalLM");
                if (a) snprintf(seen + strlen(seen), sizeof seen - strlen(seen), "%s%s", i ? ", " : "", a);
            }
        else if (!arch || json_is_null(arch)) { /* no architectures: the model type says it */
            const char *mt = json_string_value(json_object_get(root, "model_type"));
            llama = mt && !strcmp(mt, "llama");
            snprintf(seen, sizeof seen, "model_type %s", mt ? mt : "missing");
        }
        if (!llama)
            rc = set_err(err, errlen, "%s: architectures [%s]: fspo reads only LlamaForCausalLM checkpoints", path,
                         seen);
    }
    const char *act = rc ? NULL : json_string_value(json_object_get(root, "hidden_act"));
    if (rc == 0 && json_object_get(root, "hidden_act") && (!act || strcmp(act, "silu")))
        rc = set_err(err, errlen, "%s: hidden_act must be \"silu\" (fspo's SwiGLU)", path);
    static const char *no_bias[] = { "attention_bias", "mlp_bias" };
    for (int i = 0; i < 2 && rc == 0; i++) {
        json_t *b = json_object_get(root, no_bias[i]);
        if (b && !json_is_false(b)) rc = set_err(err, errlen, "%s: %s must be false (fspo has no biases)", path, no_bias[i]);
    }
    json_t *rs = rc ? NULL : json_object_get(root, "rope_scaling");
    if (rs && !json_is_null(rs)) rc = set_err(err, errlen, "%s: rope_scaling is not supported (null only)", path);
    int tie = 0, head_dim = 0;
    if (rc == 0) rc = get_int(root, path, "vocab_size", -1, 1, 1 << 24, &c->vocab, err, errlen);
    if (rc == 0) rc = get_int(root, path, "hidden_size", -1, 1, 65536, &c->d_model, err, errlen);
    if (rc == 0) rc = get_int(root, path, "num_hidden_layers", -1, 1, 4096, &c->n_layers, err, errlen);
    if (rc == 0) rc = get_int(root, path, "num_attention_heads", -1, 1, 65536, &c->n_heads, err, errlen);
    if (rc == 0) rc = get_int(root, path, "intermediate_size", -1, 1, 1 << 20, &c->ffn_hidden, err, errlen);
    if (rc == 0) rc = get_int(root, path, "max_position_embeddings", -1, 1, 1 << 20, &c->max_seq, err, errlen);
    if (rc == 0) rc = get_int(root, path, "num_key_value_heads", c->n_heads, 1, 65536, &c->n_kv_heads, err, errlen);
    if (rc == 0 && c->n_heads > 0)
        rc = get_int(root, path, "head_dim", c->d_model / c->n_heads, 1, 65536, &head_dim, err, errlen);
    if (rc == 0 && head_dim * c->n_heads != c->d_model)
        rc = set_err(err, errlen, "%s: head_dim %d is not hidden_size / num_attention_heads (fspo's head size)", path,
                     head_dim);
    if (rc == 0) rc = get_num(root, path, "rms_norm_eps", 1e-6, &c->norm_eps, err, errlen); /* LlamaConfig's defaults */
    if (rc == 0) rc = get_num(root, path, "rope_theta", 10000.0, &c->rope_theta, err, errlen);
    json_t *t = rc ? NULL : json_object_get(root, "tie_word_embeddings");
    if (rc == 0 && t && !json_is_boolean(t)) rc = set_err(err, errlen, "%s: tie_word_embeddings must be true or false", path);
    if (rc == 0) tie = t && json_is_true(t);
    c->untied = !tie;
    json_decref(root);
    char why[256];
    if (rc == 0 && model_config_validate(c, why, sizeof why) != 0)
        rc = set_err(err, errlen, "%s: a shape fspo cannot run: %s", path, why);
    return rc;
}

/* ---- tensor names and layouts ---- */

typedef struct {
    char name[96];
    int rows, cols; /* cols 0: a vector */
    size_t offset;  /* into the flat parameters */
    int heads;      /* > 0: rows are RoPE heads of rows/heads, permuted between the two pairings */
} Map;

/* The Hugging Face tensors of model m, in model order, with `vocab` rows of
 * embed_tokens and lm_head (m's first rows); returns how many (<= 3 + 9L). */
static int build_map(const Model *m, int vocab, Map *out)
{
    const ModelConfig *c = &m->cfg;
    int C = c->d_model, F = c->ffn_hidden, Ckv = model_kv_width(c), n = 0;
    const TensorInfo *t = m->tensors;
#define MAP(nm, r, cl, off, h) \
    (snprintf(out[n].name, sizeof out[n].name, "%s", nm), out[n].rows = (r), out[n].cols = (cl), out[n].offset = (off), \
     out[n].heads = (h), n++)
    MAP("model.embed_tokens.weight", vocab, C, t[0].offset, 0);
    for (int l = 0; l < c->n_layers; l++) {
        const TensorInfo *lt = t + model_layer_tensor(l); /* attn_norm wqkv wo mlp_norm w13 w2 */
        char p[96];
#define LAYER(suffix, r, cl, off, h) (snprintf(p, sizeof p, "model.layers.%d.%s", l, suffix), MAP(p, r, cl, off, h))
        LAYER("input_layernorm.weight", C, 0, lt[0].offset, 0);
        LAYER("self_attn.q_proj.weight", C, C, lt[1].offset, c->n_heads);
        LAYER("self_attn.k_proj.weight", Ckv, C, lt[1].offset + (size_t)C * C, c->n_kv_heads);
        LAYER("self_attn.v_proj.weight", Ckv, C, lt[1].offset + (size_t)(C + Ckv) * C, 0);
        LAYER("self_attn.o_proj.weight", C, C, lt[2].offset, 0);
        LAYER("post_attention_layernorm.weight", C, 0, lt[3].offset, 0);
        LAYER("mlp.gate_proj.weight", F, C, lt[4].offset, 0);
        LAYER("mlp.up_proj.weight", F, C, lt[4].offset + (size_t)F * C, 0);
        LAYER("mlp.down_proj.weight", C, F, lt[5].offset, 0);
#undef LAYER
    }
    MAP("model.norm.weight", C, 0, t[model_layer_tensor(c->n_layers)].offset, 0);
    if (c->untied) MAP("lm_head.weight", vocab, C, t[model_layer_tensor(c->n_layers) + 1].offset, 0);
#undef MAP
    return n;
}

/* Row r of head layout: fspo's interleaved row 2j holds Hugging Face's row
 * j, and 2j+1 its row hd/2 + j (per head). to_hf: fspo -> HF, else back. */
static void permute_rope(float *dst, const float *src, int rows, int cols, int heads, int to_hf)
{
    int hd = rows / heads, half = hd / 2;
    for (int h = 0; h < heads; h++)
        for (int j = 0; j < hd; j++) {
            int fs = h * hd + (j < half ? 2 * j : 2 * (j - half) + 1), hf = h * hd + j; /* fspo row, HF row */
            const float *from = src + (size_t)(to_hf ? fs : hf) * cols;
            memcpy(dst + (size_t)(to_hf ? hf : fs) * cols, from, sizeof(float) * cols);
        }
}

static void shape_str(const int64_t *shape, int ndim, char *buf, size_t len)
{
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && o < len; i++) o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < len) snprintf(buf + o, len - o, "]");
}

/* Tensor t as fp32 into *buf (grown to hold it; *cap its size in floats). */
static int read_scratch(const StSet *s, const StTensor *t, float **buf, size_t *cap, const char *dir, char *err,
                        size_t errlen)
{
    size_t n = (size_t)st_numel(t);
    if (n > *cap) {
        free(*buf);
        *buf = malloc(sizeof(float) * n);
        *cap = *buf ? n : 0;
        if (!*buf) return set_err(err, errlen, "%s: out of memory", dir);
    }
    return st_read_f32(s, t, *buf, n, err, errlen);
}

/* Rows vocab..V-1 of the [V, cols] matrix w: each the mean of rows 0..vocab-1
 * (summed in double). */
static void grow_rows(float *w, int vocab, int V, int cols)
{
    for (int c = 0; c < cols; c++) {
        double sum = 0;
        for (int r = 0; r < vocab; r++) sum += w[(size_t)r * cols + c];
        for (int r = vocab; r < V; r++) w[(size_t)r * cols + c] = (float)(sum / vocab);
    }
}

int hf_read_weights(const char *dir, Model *m, char *err, size_t errlen)
{
    ModelConfig file;
    if (hf_read_config(dir, &file, err, errlen) != 0) return -1;
    int V = m->cfg.vocab, vocab = file.vocab;
    if (vocab > V)
        return set_err(err, errlen, "%s: config.json has vocab_size %d (model.embed_tokens.weight [%d, %d]), more "
                                    "than the model's %d ids (model.vocab): fspo grows an imported vocabulary but "
                                    "never drops rows; set model.vocab to at least %d",
                       dir, vocab, vocab, m->cfg.d_model, V, vocab);
    Map *map = malloc(sizeof *map * (size_t)(3 + 9 * m->cfg.n_layers));
    if (!map) return set_err(err, errlen, "%s: out of memory", dir);
    int n = build_map(m, vocab, map), rc = 0;
    StSet s = { 0 };
    rc = st_open_dir(&s, dir, err, errlen);
    /* every tensor of the files must be one fspo reads (inv_freq buffers of old exports are derived data) */
    for (int i = 0; rc == 0 && i < s.n; i++) {
        const char *nm = s.t[i].name;
        int known = strstr(nm, ".rotary_emb.inv_freq") != NULL || (!m->cfg.untied && !strcmp(nm, "lm_head.weight"));
        for (int j = 0; j < n && !known; j++) known = !strcmp(map[j].name, nm);
        if (!known)
            rc = set_err(err, errlen, "%s: tensor %s is not part of a LlamaForCausalLM model of this config", s.paths[s.t[i].file], nm);
    }
    float *tmp = NULL;
    size_t cap = 0;
    for (int j = 0; rc == 0 && j < n; j++) {
        const Map *e = &map[j];
        const StTensor *t = st_find(&s, e->name);
        if (!t) {
            rc = set_err(err, errlen, "%s: tensor %s missing", dir, e->name);
            break;
        }
        int64_t want[2] = { e->rows, e->cols };
        int wnd = e->cols ? 2 : 1;
        if (t->ndim != wnd || t->shape[0] != want[0] || (wnd == 2 && t->shape[1] != want[1])) {
            char have[96], w[64];
            shape_str(t->shape, t->ndim, have, sizeof have);
            shape_str(want, wnd, w, sizeof w);
            rc = set_err(err, errlen, "%s: tensor %s has shape %s; config.json implies %s", s.paths[t->file], e->name,
                         have, w);
            break;
        }
        size_t numel = (size_t)e->rows * (e->cols ? e->cols : 1);
        float *dst = m->params + e->offset;
        if (e->heads) {
            rc = read_scratch(&s, t, &tmp, &cap, dir, err, errlen);
            if (rc == 0) permute_rope(dst, tmp, e->rows, e->cols, e->heads, 0);
        } else
            rc = st_read_f32(&s, t, dst, numel, err, errlen);
    }
    free(tmp);
    st_close(&s);
    free(map);
    if (rc == 0 && V > vocab) { /* new tokens (fspo's structure tokens): the mean row, see docs/interop.md */
        const TensorInfo *t = m->tensors;
        grow_rows(m->params + t[0].offset, vocab, V, m->cfg.d_model);
        if (m->cfg.untied) grow_rows(m->params + t[model_layer_tensor(m->cfg.n_layers) + 1].offset, vocab, V, m->cfg.d_model);
        report("%s: vocabulary grown from %d to %d ids: rows %d..%d of embed_tokens%s are the mean of its %d rows",
               dir, vocab, V, vocab, V - 1, m->cfg.untied ? " and of lm_head" : "", vocab);
    }
    model_params_changed(m);
    return rc;
}

/* ---- inspect ---- */

int hf_print(const char *dir, FILE *out, char *err, size_t errlen)
{
    ModelConfig c;
    if (hf_read_config(dir, &c, err, errlen) != 0) return -1;
    fprintf(out, "Hugging Face Llama directory %s\n", dir);
    fprintf(out, "  config.json: vocab_size %d, hidden_size %d, num_hidden_layers %d, num_attention_heads %d, "
                 "num_key_value_heads %d, intermediate_size %d, max_position_embeddings %d, rms_norm_eps %g, "
                 "rope_theta %g, tie_word_embeddings %s\n",
            c.vocab, c.d_model, c.n_layers, c.n_heads, c.n_kv_heads, c.ffn_hidden, c.max_seq, c.norm_eps, c.rope_theta,
            c.untied ? "false" : "true");
    char json[4200], added[400] = "";
    snprintf(json, sizeof json, "%s/tokenizer.json", dir);
    Tokenizer t = { 0 };
    int vocab = c.vocab;
    struct stat st;
    if (stat(json, &st) != 0) fprintf(out, "  tokenizer: no tokenizer.json: fspo's byte ids (%s)\n", TOKENIZER_ID);
    else {
        Bpe *own = tokenizer_json_read(json, err, errlen);
        if (!own || tokenizer_load_json(json, 1, &t, added, sizeof added, err, errlen) != 0) {
            bpe_free(own);
            return -1;
        }
        const BpeSpec *sp = bpe_spec(own);
        fprintf(out, "  tokenizer.json: %d ids (%zu in the vocabulary, %zu merges, %zu added tokens)\n",
                (int)bpe_n_ids(own), sp->n_vocab, sp->n_merges, sp->n_added);
        bpe_free(own);
        if (added[0]) fprintf(out, "    fspo adds the structure tokens it lacks: %s\n", added);
        else fprintf(out, "    it has fspo's eight structure tokens\n");
        fprintf(out, "    as fspo reads it: tokenizer %s, %d ids\n", tok_name(&t), (int)tok_n_ids(&t));
        if (tok_n_ids(&t) > vocab) vocab = tok_n_ids(&t);
        tok_free(&t);
    }
    if (vocab > c.vocab)
        fprintf(out, "  fspo's model: vocab %d (embed_tokens%s grow by %d rows, the mean of the others)\n", vocab,
                c.untied ? " and lm_head" : "", vocab - c.vocab);
    StSet s = { 0 };
    if (st_open_dir(&s, dir, err, errlen) != 0) return -1;
    static const char *dt[] = { "F32", "F16", "BF16" };
    fprintf(out, "\n  %-48s %-5s %-14s %12s  %s\n", "tensor", "dtype", "shape", "L2 norm", "file");
    float *buf = NULL;
    size_t cap = 0;
    int rc = 0;
    for (int i = 0; i < s.n && rc == 0; i++) {
        const StTensor *e = &s.t[i];
        size_t n = (size_t)st_numel(e);
        rc = read_scratch(&s, e, &buf, &cap, dir, err, errlen);
        double sq = 0;
        for (size_t k = 0; rc == 0 && k < n; k++) sq += (double)buf[k] * buf[k];
        char shape[64];
        shape_str(e->shape, e->ndim, shape, sizeof shape);
        const char *file = strrchr(s.paths[e->file], '/');
        if (rc == 0)
            fprintf(out, "  %-48s %-5s %-14s %12.6g  %s\n", e->name, dt[e->dtype], shape, sqrt(sq),
                    file ? file + 1 : s.paths[e->file]);
    }
    free(buf);
    st_close(&s);
    if (rc != 0) return -1;
    /* what every fspo command checks: each tensor the config implies, no other */
    Model *m = model_create(&c, 0, 1, 1);
    rc = hf_read_weights(dir, m, err, errlen);
    if (rc == 0) fprintf(out, "\n  weights: %zu parameters, every tensor of the config, none else: fspo reads them\n", m->n_params);
    model_free(m);
    return rc;
}

/* ---- export ---- */

/* Significant digits that print v so it reads back as the same double
 * (at least 6, so 500000.0 does not become 5e+05). */
static int real_digits(double v)
{
    char buf[40];
    for (int p = 6; p < 17; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, v);
        if (strtod(buf, NULL) == v) return p;
    }
    return 17;
}

static int write_json(const char *dir, const char *name, json_t *obj, int digits, char *err, size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int rc = json_dump_file(obj, path, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(digits));
    json_decref(obj);
    FILE *f = rc == 0 ? fopen(path, "ab") : NULL; /* a final newline, as Hugging Face writes */
    if (f) rc = fputc('\n', f) == EOF, rc |= fclose(f) != 0;
    if (rc || !f) return set_err(err, errlen, "%s: cannot write: %s", path, strerror(errno ? errno : EIO));
    return 0;
}

/* fspo's byte tokenizer as a byte-level BPE: the 256 bytes (id = byte),
 * no merges, the special tokens 256..263 in the vocabulary and as added
 * tokens. On valid UTF-8 text it gives the byte tokenizer's ids. */
static int write_byte_tokenizer(const char *dir, char *err, size_t errlen)
{
    static char text[TOKENIZER_VOCAB][32];
    BpeToken vocab[TOKENIZER_VOCAB];
    BpeAdded added[TOKENIZER_VOCAB - 256];
    for (int i = 0; i < TOKENIZER_VOCAB; i++) {
        size_t len;
        if (i < 256) {
            char b = (char)i;
            len = bpe_byte_level(&b, 1, text[i]);
        } else {
            len = (size_t)snprintf(text[i], sizeof text[i], "%s", tok_special_name(i));
            if (len >= sizeof text[i]) return set_err(err, errlen, "internal: special token %d's name is too long", i);
            added[i - 256] = (BpeAdded){ text[i], len, i, 1, 0 };
        }
        vocab[i] = (BpeToken){ text[i], len, i };
    }
    BpeSpec spec = { vocab, TOKENIZER_VOCAB, NULL, 0, added, TOKENIZER_VOCAB - 256, 0 };
    Bpe *b = bpe_build(&spec, err, errlen);
    if (!b) return -1;
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    int rc = tokenizer_json_write(b, path, err, errlen);
    bpe_free(b);
    return rc;
}

/* dir absent (created) or an empty directory */
static int prepare_dir(const char *dir, char *err, size_t errlen)
{
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (mkdir(dir, 0755) != 0) return set_err(err, errlen, "%s: cannot create: %s", dir, strerror(errno));
        return 0;
    }
    if (!S_ISDIR(st.st_mode)) return set_err(err, errlen, "%s: exists and is not a directory", dir);
    DIR *d = opendir(dir);
    if (!d) return set_err(err, errlen, "%s: %s", dir, strerror(errno));
    struct dirent *de;
    int used = 0;
    while ((de = readdir(d)))
        used |= strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
    closedir(d);
    if (used) return set_err(err, errlen, "%s: directory exists and is not empty; export writes a new directory", dir);
    return 0;
}

int hf_export(const Model *m, const Tokenizer *tok, const char *dir, char *err, size_t errlen)
{
    const ModelConfig *c = &m->cfg;
    if (prepare_dir(dir, err, errlen) != 0) return -1;
    json_t *cfg = json_object();
    json_t *arch = json_array();
    json_array_append_new(arch, json_string("LlamaForCausalLM"));
    json_object_set_new(cfg, "architectures", arch);
    json_object_set_new(cfg, "model_type", json_string("llama"));
    json_object_set_new(cfg, "hidden_size", json_integer(c->d_model));
    json_object_set_new(cfg, "intermediate_size", json_integer(c->ffn_hidden));
    json_object_set_new(cfg, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(cfg, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(cfg, "head_dim", json_integer(c->d_model / c->n_heads));
    json_object_set_new(cfg, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(cfg, "vocab_size", json_integer(c->vocab));
    json_object_set_new(cfg, "max_position_embeddings", json_integer(c->max_seq));
    json_object_set_new(cfg, "rms_norm_eps", json_real(c->norm_eps));
    json_object_set_new(cfg, "rope_theta", json_real(c->rope_theta));
    json_object_set_new(cfg, "rope_scaling", json_null());
    json_object_set_new(cfg, "tie_word_embeddings", json_boolean(!c->untied));
    json_object_set_new(cfg, "torch_dtype", json_string("float32"));
    json_object_set_new(cfg, "hidden_act", json_string("silu"));
    json_object_set_new(cfg, "attention_bias", json_false());
    json_object_set_new(cfg, "mlp_bias", json_false());
    json_object_set_new(cfg, "initializer_range", json_real(0.02));
    json_object_set_new(cfg, "bos_token_id", json_integer(tok_id(tok, TOK_BOS)));
    json_object_set_new(cfg, "eos_token_id", json_integer(tok_id(tok, TOK_EOS)));
    json_object_set_new(cfg, "pad_token_id", json_integer(tok_id(tok, TOK_PAD)));
    json_object_set_new(cfg, "use_cache", json_true());
    int digits = real_digits(c->norm_eps);
    if (real_digits(c->rope_theta) > digits) digits = real_digits(c->rope_theta);
    if (write_json(dir, "config.json", cfg, digits, err, errlen) != 0) return -1;
    json_t *gen = json_object();
    json_object_set_new(gen, "bos_token_id", json_integer(tok_id(tok, TOK_BOS)));
    json_object_set_new(gen, "eos_token_id", json_integer(tok_id(tok, TOK_EOS)));
    json_object_set_new(gen, "pad_token_id", json_integer(tok_id(tok, TOK_PAD)));
    if (write_json(dir, "generation_config.json", gen, 6, err, errlen) != 0) return -1;
    if (tok && tok->bpe) {
        char path[4200];
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        if (tokenizer_json_write(tok->bpe, path, err, errlen) != 0) return -1;
    } else if (write_byte_tokenizer(dir, err, errlen) != 0)
        return -1;

    Map *map = malloc(sizeof *map * (size_t)(3 + 9 * c->n_layers));
    StWriteTensor *t = malloc(sizeof *t * (size_t)(3 + 9 * c->n_layers));
    float *perm = malloc(sizeof(float) * m->n_params); /* the permuted q/k rows (others point into params) */
    if (!map || !t || !perm) {
        free(map), free(t), free(perm);
        return set_err(err, errlen, "%s: out of memory", dir);
    }
    int n = build_map(m, c->vocab, map);
    for (int j = 0; j < n; j++) {
        const Map *e = &map[j];
        const float *src = m->params + e->offset;
        if (e->heads) {
            permute_rope(perm + e->offset, src, e->rows, e->cols, e->heads, 1);
            src = perm + e->offset;
        }
        t[j] = (StWriteTensor){ e->name, e->cols ? 2 : 1, { e->rows, e->cols }, src };
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int rc = st_write(path, t, n, err, errlen);
    free(map), free(t), free(perm);
    return rc;
}
