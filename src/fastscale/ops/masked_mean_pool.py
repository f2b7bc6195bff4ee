"""PLACEHOLDER: replaced by the masked_mean_pool op."""


def masked_mean_pool(*args, **kwargs):
    raise NotImplementedError('masked_mean_pool')


def masked_mean_pool_backward(*args, **kwargs):
    raise NotImplementedError('masked_mean_pool_backward')
