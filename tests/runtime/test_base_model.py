"""The base model is shared by every request of a base server, concurrently."""
from concurrent.futures import ThreadPoolExecutor

import torch

PROMPTS = ["a red cube on a table", "a lighthouse", "", "an owl made of brass gears at dusk, detailed"]


def test_concurrent_text_encoding_equals_serial_encoding(tiny_base_model) -> None:
    def encode(prompt: str) -> torch.Tensor:
        return tiny_base_model.encode_text(prompt, "blurry" if prompt else None, 5.0, 64, 64).prompt_embeds

    serial = {prompt: encode(prompt) for prompt in PROMPTS}
    work = PROMPTS * 15
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(encode, work))
    for prompt, embeds in zip(work, together):
        assert torch.equal(embeds, serial[prompt]), prompt
