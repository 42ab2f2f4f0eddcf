/* loss: FSPO's preference objectives on per-answer log-probabilities.
 *
 * The model returns one log-prob per target token; an answer's log-prob is
 * the sum over its tokens (PackedAnswers says which). With policy sums
 * pc, pr and reference sums rc, rr for a query's chosen and rejected answer:
 *   h = beta * ((pc - rc) - (pr - rr))
 *   dpo    -log sigmoid(h)
 *   cdpo   -(1-eps) log sigmoid(h) - eps log sigmoid(-h)        (label smoothing eps)
 *   ipo    (h/beta - 1/(2 beta))^2                              (FSPO's: summed log-probs)
 *   simpo  -log sigmoid(beta (pc/|c| - pr/|r|) - gamma)         (no reference)
 *   hinge  max(0, 1 - h)
 * plus sft_weight * (-pc / |c|) per pair when sft_weight > 0. The batch loss
 * is the sum over pairs divided by `norm` (the GLOBAL pair count across
 * ranks, so every world size computes the same update).
 *
 * The SFT stage's loss is next-token NLL (sft_loss), and a user
 * description in the context (data.user_desc cot) adds NLL on its tokens:
 * in SFT among the other targets, in the preference stage as desc_loss. */
#ifndef FSPO_LOSS_H
#define FSPO_LOSS_H

#include "src/batch.h"
#include "src/pack.h"

typedef enum { LOSS_DPO = 0, LOSS_IPO, LOSS_CDPO, LOSS_SIMPO, LOSS_HINGE } LossType;
/* loss.type's names, in LossType order (io/config.c binds the key to them) */
static const char *const LOSS_TYPE_NAMES[] = { "dpo", "ipo", "cdpo", "simpo", "hinge", NULL };

/* The training stages (train.stage): SFT learns the chosen answers with
 * sft_loss; the preference stage learns with pref_loss. */
typedef enum { STAGE_SFT = 0, STAGE_PREF } Stage;
static const char *const STAGE_NAMES[] = { "sft", "pref", NULL };

typedef struct {
    LossType type;
    double beta, label_smoothing, simpo_gamma, sft_weight;
    double desc_weight; /* the description's weight relative to an answer's (sft_loss, desc_loss's caller) */
} LossConfig;

/* What both stages' losses add up over meta-examples: the loss, the query
 * pairs, TRL's reward sums (preference stage; divide by pairs for means)
 * and the target tokens the SFT loss averages over. All doubles, so a
 * step's sums reduce across ranks as one array. */
typedef struct {
    double loss, pairs;
    double reward_chosen, reward_rejected, reward_margin, reward_accuracy; /* beta * (policy - reference) */
    double logp_chosen, logp_rejected;
    double tokens; /* SFT target tokens */
} LossStats;

/* to += from, field by field. */
void loss_stats_add(LossStats *to, const LossStats *from);

/* Per-answer sums of target log-probs: sums[a] over ans->first[a]..first[a+1]. */
void answer_logps(const float *logp, const PackedAnswers *ans, double *sums);

/* Loss for one meta-example's pairs. logp: the policy's per-target
 * log-probs; ref: the reference's per-answer sums (NULL for simpo). Adds
 * dloss/dlogp to dlogp[] for each answer token (scaled by 1/norm), adds to
 * *stats, and returns this example's share of the loss (already / norm). */
double pref_loss(const LossConfig *c, const float *logp, const double *ref, const PackedAnswers *ans, double norm,
                 float *dlogp, LossStats *stats);

/* SFT: NLL of the targets the SFT stage learns from one meta-example: the
 * queries' chosen answers (and rejected ones with include_rejected), the
 * context's chosen answers (ans->ctx_first..ctx_end, empty unless packed
 * with them) and the description (ans->desc_first..desc_end), each token
 * weighted 1/norm (norm: the GLOBAL count of such tokens), a description
 * token desc_weight/norm. Sets dlogp on them, subtracts each token's share
 * from stats->loss, counts it in stats->tokens and the meta-example's
 * query pairs in stats->pairs. */
void sft_loss(const float *logp, const PackedAnswers *ans, int include_rejected, double desc_weight, double norm,
              float *dlogp, LossStats *stats);

/* The preference stage's description term: weight * (token-mean NLL of
 * the description and its EOS) per query pair of the meta-example, / norm
 * (the global pair count), as each pair's chosen-answer NLL under
 * loss.sft_weight. Sets dlogp on the description's targets and adds the
 * term to stats->loss; nothing without a description or with weight 0. */
void desc_loss(const float *logp, const PackedAnswers *ans, double weight, double norm, float *dlogp,
               LossStats *stats);

#endif
