"""The per-step ControlNet forward with a once-per-request image embedding equals diffusers'."""
import torch
from diffusers import ControlNetModel

from swiftdiffusion.runtime.controlnet.forward import controlnet_residuals, embed_control_image


def test_residuals_with_cached_embedding_equal_controlnet_forward(tiny_model_set, tiny_base_model) -> None:
    net = ControlNetModel.from_pretrained(tiny_model_set / "controlnets" / "depth")
    text = tiny_base_model.encode_text("a red cube", None, 5.0, 64, 64)
    image = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    embedding = embed_control_image(net, image)
    for step, timestep in enumerate((torch.tensor(999), torch.tensor(500.0), torch.tensor([1]))):
        sample = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(step))
        with torch.no_grad():
            down, mid = net(sample, timestep, encoder_hidden_states=text.prompt_embeds, controlnet_cond=image,
                            conditioning_scale=0.7, added_cond_kwargs=text.added_cond_kwargs, return_dict=False)
        ours = controlnet_residuals(net, sample, timestep, text, embedding, 0.7)
        assert len(ours.down) == len(down)
        assert all(torch.equal(a, b) for a, b in zip(ours.down, down))
        assert torch.equal(ours.mid, mid)
        assert mid.abs().max() > 0
