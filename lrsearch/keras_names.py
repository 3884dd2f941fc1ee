"""The loss and metric identifiers Keras accepts by name (`keras.losses.get`,
`keras.metrics.get`; not the metrics that need arguments, such as IoU), as plain data: the
API checks a request's `loss` and `metrics` against them without importing Keras
(tests/training/test_keras_names.py checks the lists against the installed Keras). Custom
ones are registered by operator plugins (`package>name`)."""

from __future__ import annotations

LOSSES = (
    'BCE', 'BinaryCrossentropy', 'BinaryFocalCrossentropy', 'CTC', 'CategoricalCrossentropy',
    'CategoricalFocalCrossentropy', 'CategoricalHinge', 'Circle', 'CosineSimilarity', 'Dice',
    'Hinge', 'Huber', 'KLD', 'KLDivergence', 'LogCosh', 'MAE', 'MAPE', 'MSE', 'MSLE',
    'MeanAbsoluteError', 'MeanAbsolutePercentageError', 'MeanSquaredError',
    'MeanSquaredLogarithmicError', 'Poisson', 'SparseCategoricalCrossentropy', 'SquaredHinge',
    'Tversky', 'bce', 'binary_crossentropy', 'binary_focal_crossentropy',
    'categorical_crossentropy', 'categorical_focal_crossentropy', 'categorical_hinge',
    'circle', 'cosine_similarity', 'ctc', 'dice', 'hinge', 'huber', 'kl_divergence', 'kld',
    'log_cosh', 'mae', 'mape', 'mean_absolute_error', 'mean_absolute_percentage_error',
    'mean_squared_error', 'mean_squared_logarithmic_error', 'mse', 'msle', 'poisson',
    'sparse_categorical_crossentropy', 'squared_hinge', 'tversky',
)

METRICS = (
    'AUC', 'Accuracy', 'BCE', 'BinaryAccuracy', 'BinaryCrossentropy', 'BinaryIoU',
    'CategoricalAccuracy', 'CategoricalCrossentropy', 'CategoricalHinge',
    'ConcordanceCorrelation', 'CosineSimilarity', 'F1Score', 'FBetaScore', 'FalseNegatives',
    'FalsePositives', 'Hinge', 'KLDivergence', 'LogCoshError', 'MAE', 'MAPE', 'MSE', 'MSLE',
    'MeanAbsoluteError', 'MeanAbsolutePercentageError', 'MeanSquaredError',
    'MeanSquaredLogarithmicError', 'PearsonCorrelation', 'Poisson', 'Precision', 'R2Score',
    'Recall', 'RootMeanSquaredError', 'SparseCategoricalAccuracy',
    'SparseCategoricalCrossentropy', 'SparseTopKCategoricalAccuracy', 'SquaredHinge',
    'TopKCategoricalAccuracy', 'TrueNegatives', 'TruePositives', 'accuracy', 'auc', 'bce',
    'binary_accuracy', 'binary_crossentropy', 'binary_io_u', 'categorical_accuracy',
    'categorical_crossentropy', 'categorical_hinge', 'concordance_correlation',
    'cosine_similarity', 'f1_score', 'f_beta_score', 'false_negatives', 'false_positives',
    'hinge', 'kl_divergence', 'log_cosh_error', 'mae', 'mape', 'mean_absolute_error',
    'mean_absolute_percentage_error', 'mean_squared_error', 'mean_squared_logarithmic_error',
    'mse', 'msle', 'pearson_correlation', 'poisson', 'precision', 'r2_score', 'recall',
    'root_mean_squared_error', 'sparse_categorical_accuracy',
    'sparse_categorical_crossentropy', 'sparse_top_k_categorical_accuracy', 'squared_hinge',
    'top_k_categorical_accuracy', 'true_negatives', 'true_positives',
)
