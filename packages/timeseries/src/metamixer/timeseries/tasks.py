"""The forecasting task of ``metamixer`` (see ``metamixer.lab.tasks``)."""

from metamixer.lab.tasks import register_task

T = "metamixer.timeseries"

register_task(
    "timeseries",
    model=f"{T}.lit:Forecaster",
    data=f"{T}.data:TSLibDataModule",
    links=[
        ("data.num_vars", "model.num_vars"),
        ("data.seq_len", "model.seq_len"),
        ("data.pred_len", "model.horizon"),
    ],
    writer=f"{T}.writer:ForecastWriter",
    handoffs=[
        ("variables", "variables"),
        ("inverse_transform", "inverse_transform"),
        ("forecast_dates", "forecast_dates"),
    ],
    model_handoffs=[("inverse_transform", "inverse_transform")],
    subclass_mode_data=False,
    tools={
        "prepare": f"{T}.prepare:main",
        "analyze": f"{T}.analyze:main",
        "predict-files": f"{T}.predict:main",
    },
    description="long-term forecasting (1D FFNet; TSLib CSVs, gluonts)",
)
