"""Group advantages against TRL's own GRPOTrainer / RLOOTrainer advantage code.

TRL computes advantages inline in `_generate_and_score_completions`, so each trainer is built for
real around a tiny random Llama and a word-level tokenizer made here, a reward function returns
fixed rewards, and the advantages TRL outputs are compared with ours (TRL's std epsilon is 1e-4).
"""

from __future__ import annotations

import pytest
import torch

from iquest_rl.algos.advantages import group_advantages, rloo_advantages

# two prompts × 4 generations: a mixed group and an all-equal group (-> zero advantage, not NaN)
REWARDS = [1.0, 0.0, 0.25, 1.0, 0.5, 0.5, 0.5, 0.5]
GROUPS = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "a", "b", "c", "d"])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="a"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=6, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1,
        num_key_value_heads=1, pad_token_id=0, eos_token_id=1, bos_token_id=1))
    data = Dataset.from_list([{"prompt": "a b"}] * 8)
    return model, tok, data, tmp_path_factory.mktemp("trl")


def _fixed_reward(completions, **kwargs):
    assert len(completions) == len(REWARDS)
    return list(REWARDS)


def _common(out_dir):
    return dict(output_dir=str(out_dir), use_cpu=True, num_generations=4, per_device_train_batch_size=8,
                max_completion_length=3, report_to=[], beta=0.0)


@pytest.mark.parametrize("scale_rewards,scale", [("group", True), ("none", False)])
def test_grpo_and_dr_grpo_advantages_match_trl(tiny, scale_rewards, scale):
    from trl import GRPOConfig, GRPOTrainer

    model, tok, data, out = tiny
    args = GRPOConfig(**_common(out / scale_rewards), scale_rewards=scale_rewards)
    trainer = GRPOTrainer(model=model, reward_funcs=[_fixed_reward], args=args, train_dataset=data,
                          processing_class=tok)
    theirs = trainer._generate_and_score_completions([{"prompt": "a b"}] * 8)["advantages"]
    ours = group_advantages(torch.tensor(REWARDS), GROUPS, scale=scale, eps=1e-4)
    torch.testing.assert_close(ours, theirs.float())
    assert torch.equal(ours[4:], torch.zeros(4))


def test_rloo_advantages_match_trl(tiny):
    from trl import RLOOConfig, RLOOTrainer

    model, tok, data, out = tiny
    args = RLOOConfig(**_common(out / "rloo"), normalize_advantages=False)
    trainer = RLOOTrainer(model=model, reward_funcs=[_fixed_reward], args=args, train_dataset=data,
                          processing_class=tok)
    theirs = trainer._generate_and_score_completions([{"prompt": "a b"}] * 8)["advantages"]
    torch.testing.assert_close(rloo_advantages(torch.tensor(REWARDS), GROUPS), theirs.float())
