"""The example's model package (included as a directory: `include = ["models/"]`)."""
