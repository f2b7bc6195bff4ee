"""PLACEHOLDER: replaced by the adam op."""


def adam_step(*args, **kwargs):
    raise NotImplementedError('adam_step')


def sparse_adam_step(*args, **kwargs):
    raise NotImplementedError('sparse_adam_step')
