"""Input checks shared by the layers (private)."""



def check_token_input(layer_name, input_shape, num_heads):
    """Validates a `(batch, tokens, width)` input whose width fits the heads.

    Returns the width.
    """
    if len(input_shape) != 3:
        raise ValueError(
            f"`{layer_name}` expects inputs of shape (batch, tokens, "
            f"width). Received: input_shape={input_shape}"
        )
    width = input_shape[-1]
    if width is None or width % num_heads:
        raise ValueError(
            "The input width must be divisible by `num_heads`. "
            f"Received: width={width}, num_heads={num_heads}"
        )
    return width
