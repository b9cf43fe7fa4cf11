#pragma once
/// Small dependency-free SVG plotting (lines, histograms, scatter, error bars, heatmaps) for the examples.
///
///   tapir::io::Figure fig(640, 480);
///   auto& ax = fig.axes();
///   ax.line(fpr, tpr, tapir::io::Style("DNN").width(2));
///   ax.set_xlabel("background efficiency").set_ylabel("signal efficiency");
///   fig.save("roc.svg");
///
/// The parts: svg/document.hpp (values, styles, SVG text), svg/ticks.hpp (axis ticks),
/// svg/axes.hpp (one panel and its plot kinds), svg/figure.hpp (the grid and the file).

#include "svg/axes.hpp"
#include "svg/document.hpp"
#include "svg/figure.hpp"
#include "svg/ticks.hpp"
