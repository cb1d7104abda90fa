"""A Hugging Face text encoder from a local path (tiny random BERT written with save_pretrained)."""

import shutil

import numpy as np
import pytest
import torch

from srpo.spec import TABLETOP_SPEC
from srpo_trainer.policies.text import TextEncoderError
from srpo_trainer.policies.tiny_vla import TinyVLAConfig, TinyVLAPolicy
from tests.trainer.conftest import SMALL, make_obs

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "open", "the", "drawer", "press", "orange", "button", "touch",
         "red", "cube"]


@pytest.fixture
def tiny_bert(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    path = tmp_path / "tiny-bert"
    BertTokenizer(vocab_file=str(vocab)).save_pretrained(str(path))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=64)).save_pretrained(str(path))
    return path


def test_policy_runs_with_a_local_hf_text_encoder_and_checkpoints_it(tiny_bert, stats, tmp_path):
    cfg = TinyVLAConfig(**SMALL, text_encoder=str(tiny_bert))
    policy = TinyVLAPolicy(cfg, TABLETOP_SPEC.with_image_size(32, 32), stats)
    obs = make_obs(3)
    out = policy.sample(obs)
    assert out.chunks.shape == (3, 8, 7)
    enc = policy.model.text_encoder
    assert not any(p.requires_grad for p in enc.model.parameters()) and enc.proj.weight.requires_grad
    ids, mask = policy.processor.tokenize(obs.instructions)
    assert ids[0, 0].item() == 2  # [CLS] from the BERT tokenizer, not the byte tokenizer

    policy.save_pretrained(tmp_path / "ckpt")
    shutil.rmtree(tiny_bert)  # the checkpoint must not depend on the original directory
    loaded = TinyVLAPolicy.from_pretrained(tmp_path / "ckpt")
    assert np.array_equal(policy.predict_action_chunk(obs), loaded.predict_action_chunk(obs))


def test_missing_hf_path_is_a_clear_error(stats, tmp_path):
    with pytest.raises(TextEncoderError, match="nowhere"):
        TinyVLAPolicy(TinyVLAConfig(**SMALL, text_encoder=str(tmp_path / "nowhere")),
                      TABLETOP_SPEC.with_image_size(32, 32), stats)
