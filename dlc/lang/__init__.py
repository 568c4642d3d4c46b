"""The .dln language: parse (syntax), schema (the keys of every block, from the ir fields), check (coercion and graph
rules), lower (compiler, with resolve for templates), overrides (--set), rewrite (.fit.dln), templates."""
