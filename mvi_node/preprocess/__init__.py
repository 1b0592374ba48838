"""Image preprocessing shared by recipes (SimpleITK): MR volumes in patient geometry,
N4 bias-field correction, robust intensity maps, rigid registration and resampling onto
one reference grid. :func:`mvi_node.preprocess.mr.prepare_mr` is the pipeline MR recipes
call; the modules beside it are its steps.
"""
