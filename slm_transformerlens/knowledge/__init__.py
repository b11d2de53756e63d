"""Spoken-knowledge benchmark: likelihood of correct vs counterfactual completions (slamkit's rules).

items = read_knowledge("facts.parquet")                      # or read_knowledge_json / items_from_facts
table = knowledge_table(model, items, mode="speech", speech_tokenizer=tokenizer)
knowledge_accuracy(table)                                     # length-normalised, tie = 0.5
"""

from slm_transformerlens.knowledge.data import (
    PARTS,
    KnowledgeColumns,
    KnowledgeItem,
    SpokenPart,
    items_from_facts,
    read_knowledge,
    read_knowledge_json,
    read_knowledge_parquet,
)
from slm_transformerlens.knowledge.facts import FACTS, Fact
from slm_transformerlens.knowledge.scoring import (
    KNOWLEDGE_MODES,
    SCORE_TOKENS,
    KnowledgeError,
    encode_continuation,
    knowledge_accuracy,
    knowledge_table,
    pair_scores,
    sequence_log_likelihoods,
)

__all__ = [
    "FACTS",
    "KNOWLEDGE_MODES",
    "PARTS",
    "SCORE_TOKENS",
    "Fact",
    "KnowledgeColumns",
    "KnowledgeError",
    "KnowledgeItem",
    "SpokenPart",
    "encode_continuation",
    "items_from_facts",
    "knowledge_accuracy",
    "knowledge_table",
    "pair_scores",
    "read_knowledge",
    "read_knowledge_json",
    "read_knowledge_parquet",
    "sequence_log_likelihoods",
]
