#pragma once
/// SVG plotting, the figure: a grid of Axes written as one SVG document.

#include <cstddef>
#include <fstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../../error.hpp"
#include "axes.hpp"
#include "document.hpp"

namespace tapir::io {

class Figure {
public:
    /// width x height pixels, divided into a rows x cols grid of axes.
    explicit Figure(int width = 640, int height = 480, int rows = 1, int cols = 1)
        : w_(width), h_(height), rows_(rows), cols_(cols) {
        if (width < 100 || height < 100 || width > 20000 || height > 20000)
            throw value_error("Figure: size must be 100..20000 px, got " + std::to_string(width) + " x " +
                              std::to_string(height) +
                              " (for a grid of subplots use Figure(width, height, rows, cols))");
        if (rows < 1 || cols < 1 || rows > 16 || cols > 16)
            throw value_error("Figure: grid must be 1..16 x 1..16, got " + std::to_string(rows) + " x " +
                              std::to_string(cols));
        axes_.resize(static_cast<std::size_t>(rows * cols));
    }
    Axes& axes(int row = 0, int col = 0) {
        if (row < 0 || col < 0 || row >= rows_ || col >= cols_)
            throw value_error("Figure::axes: (" + std::to_string(row) + ", " + std::to_string(col) + ") outside the " +
                              std::to_string(rows_) + " x " + std::to_string(cols_) + " grid");
        return axes_[static_cast<std::size_t>(row * cols_ + col)];
    }
    /// Title above all panels.
    Figure& suptitle(std::string s) { title_ = std::move(s); return *this; }

    std::string to_string() const {
        using detail::attr;
        std::string o = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n"
                        "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\"" +
                        attr("width", w_) + attr("height", h_) + " viewBox=\"0 0 " + detail::pt(w_, h_) +
                        "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" fill=\"#222222\">\n" +
                        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
        const double th = title_.empty() ? 0 : 34;
        if (!title_.empty())
            o += "<text class=\"suptitle\"" + attr("x", w_ / 2.0) +
                 " y=\"24\" font-size=\"17\" font-weight=\"bold\" text-anchor=\"middle\">" +
                 detail::escape(title_) + "</text>\n";
        const double cw = w_ / static_cast<double>(cols_), ch = (h_ - th) / static_cast<double>(rows_);
        for (int r = 0; r < rows_; ++r)
            for (int c = 0; c < cols_; ++c)
                axes_[static_cast<std::size_t>(r * cols_ + c)].render(o, c * cw, th + r * ch, cw, ch,
                                                                     std::to_string(r) + "-" + std::to_string(c));
        return o + "</svg>\n";
    }
    /// Writes the SVG; throws std::runtime_error naming the path when the file cannot be written.
    void save(const std::string& path) const {
        const std::string s = to_string();
        std::ofstream f(path, std::ios::binary);
        if (f) f.write(s.data(), static_cast<std::streamsize>(s.size()));
        if (f) f.close();
        if (!f) throw std::runtime_error("Figure::save: cannot write '" + path + "'");
    }

private:
    int w_, h_, rows_, cols_;
    std::vector<Axes> axes_;
    std::string title_;
};

} // namespace tapir::io
