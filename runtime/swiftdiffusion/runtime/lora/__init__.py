"""LoRA store, formats and bounded asynchronous LoRA loading (BAL). See docs/lora.md."""
