/* frozen: see frozen.h. */
#include "src/frozen.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "src/util.h"

Model *frozen_load(const char *path, const FrozenSpec *s, char *err, size_t errlen)
{
    char why[900];
    ModelConfig own;
    if (!s->shape && access(path, R_OK) != 0) {
        set_err(err, errlen, "%s: cannot open the checkpoint: %s", path, strerror(errno));
        return NULL;
    }
    if (s->tok && ckpt_check_tokenizer(path, s->tok, s->tok_from, why, sizeof why) != 0) {
        set_err(err, errlen, "%s", why);
        return NULL;
    }
    if (!s->shape && ckpt_read_model_config(path, &own, why, sizeof why) != 0) {
        set_err(err, errlen, "%s", why);
        return NULL;
    }
    const ModelConfig *mc = s->shape ? s->shape : &own;
    Model *m = model_create_keep(mc, 0, s->max_rows, s->max_len > 0 && s->max_len < mc->max_seq ? s->max_len : mc->max_seq,
                                 (ActKeep){ s->attention, 0 });
    if (ckpt_load(path, m, NULL, s->meta, why, sizeof why) != 0 ||
        (s->checksum && ckpt_weights_checksum(path, s->checksum, why, sizeof why) != 0)) {
        set_err(err, errlen, "%s", why);
        model_free(m);
        return NULL;
    }
    return m;
}
