module github.com/imagomq/imago

go 1.26.8
