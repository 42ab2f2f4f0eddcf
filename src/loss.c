/* loss: preference objectives; formulas in loss.h. */
#include "src/loss.h"

#include <math.h>
#include <string.h>

void answer_logps(const float *logp, const PackedAnswers *ans, double *sums)
{
    for (int a = 0; a < ans->n_answers; a++) {
        double s = 0;
        for (int k = ans->first[a]; k < ans->first[a + 1]; k++) s += logp[k];
        sums[a] = s;
    }
}

/* log sigmoid(x), stable for large |x| */
static double log_sigmoid(double x) { return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)); }
static double sigmoid(double x) { return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)); }

double pref_loss(const LossConfig *c, const float *logp, const double *ref, const PackedAnswers *ans, double norm,
                 float *dlogp, LossStats *st)
{
    double total = 0, beta = c->beta;
    for (int j = 0; j < ans->n_answers / 2; j++) {
        int ac = 2 * j, ar = 2 * j + 1;
        int nc = ans->first[ac + 1] - ans->first[ac], nr = ans->first[ar + 1] - ans->first[ar];
        double pc = 0, pr = 0;
        for (int k = ans->first[ac]; k < ans->first[ac + 1]; k++) pc += logp[k];
        for (int k = ans->first[ar]; k < ans->first[ar + 1]; k++) pr += logp[k];
        double rc = ref ? ref[ac] : 0, rr = ref ? ref[ar] : 0;
        double h = beta * ((pc - rc) - (pr - rr));
        double loss, dpc, dpr; /* d loss / d pc, d pr */
        switch (c->type) {
        case LOSS_IPO: {
            double u = (pc - rc) - (pr - rr) - 1.0 / (2.0 * beta);
            loss = u * u;
            dpc = 2 * u, dpr = -2 * u;
            break;
        }
        case LOSS_CDPO: {
            double e = c->label_smoothing;
            loss = -(1 - e) * log_sigmoid(h) - e * log_sigmoid(-h);
            double g = -(1 - e) * sigmoid(-h) + e * sigmoid(h); /* d loss / d h */
            dpc = g * beta, dpr = -g * beta;
            break;
        }
        case LOSS_SIMPO: {
            double z = beta * (pc / nc - pr / nr) - c->simpo_gamma;
            loss = -log_sigmoid(z);
            double g = -sigmoid(-z);
            dpc = g * beta / nc, dpr = -g * beta / nr;
            break;
        }
        case LOSS_HINGE:
            loss = h < 1 ? 1 - h : 0;
            dpc = h < 1 ? -beta : 0, dpr = h < 1 ? beta : 0;
            break;
        case LOSS_DPO:
        default: {
            loss = -log_sigmoid(h);
            double g = -sigmoid(-h);
            dpc = g * beta, dpr = -g * beta;
            break;
        }
        }
        if (c->sft_weight > 0) { /* token-mean NLL of the chosen answer */
            loss += c->sft_weight * (-pc / nc);
            dpc += -c->sft_weight / nc;
        }
        for (int k = ans->first[ac]; k < ans->first[ac + 1]; k++) dlogp[k] += (float)(dpc / norm);
        for (int k = ans->first[ar]; k < ans->first[ar + 1]; k++) dlogp[k] += (float)(dpr / norm);
        total += loss;
        if (st) {
            double rwc = beta * (pc - rc), rwr = beta * (pr - rr);
            st->loss += loss / norm;
            st->pairs += 1;
            st->reward_chosen += rwc;
            st->reward_rejected += rwr;
            st->reward_margin += rwc - rwr;
            st->reward_accuracy += rwc > rwr;
            st->logp_chosen += pc;
            st->logp_rejected += pr;
        }
    }
    return total / norm;
}

/* Next-token NLL on targets [k0, k1), each weighted scale/norm. */
static void nll_targets(const float *logp, int k0, int k1, double scale, double norm, float *dlogp, double *loss,
                        double *tokens)
{
    for (int k = k0; k < k1; k++) {
        dlogp[k] = (float)(-scale / norm);
        *loss -= scale * logp[k] / norm;
        if (tokens) *tokens += 1;
    }
}

void sft_loss(const float *logp, const PackedAnswers *ans, int include_rejected, double desc_weight, double norm,
              float *dlogp, LossStats *stats)
{
    double *loss = &stats->loss, *tokens = &stats->tokens;
    nll_targets(logp, ans->ctx_first, ans->ctx_end, 1.0, norm, dlogp, loss, tokens); /* empty unless sft_context */
    nll_targets(logp, ans->desc_first, ans->desc_end, desc_weight, norm, dlogp, loss, tokens); /* empty without one */
    for (int a = 0; a < ans->n_answers; a++)
        if (a % 2 == 0 || include_rejected) nll_targets(logp, ans->first[a], ans->first[a + 1], 1.0, norm, dlogp, loss, tokens);
    stats->pairs += ans->n_answers / 2;
}

void desc_loss(const float *logp, const PackedAnswers *ans, double weight, double norm, float *dlogp,
               LossStats *stats)
{
    int n = ans->desc_end - ans->desc_first;
    if (n <= 0 || weight <= 0) return;
    nll_targets(logp, ans->desc_first, ans->desc_end, weight * (ans->n_answers / 2) / n, norm, dlogp, &stats->loss, NULL);
}

void loss_stats_add(LossStats *to, const LossStats *from)
{
    to->loss += from->loss, to->pairs += from->pairs;
    to->reward_chosen += from->reward_chosen, to->reward_rejected += from->reward_rejected;
    to->reward_margin += from->reward_margin, to->reward_accuracy += from->reward_accuracy;
    to->logp_chosen += from->logp_chosen, to->logp_rejected += from->logp_rejected;
    to->tokens += from->tokens;
}
