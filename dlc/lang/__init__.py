"""The .dln language: parse (syntax), check (schemas), lower (compiler), overrides (--set), rewrite (.fit.dln), templates."""
